import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LogFollower, recoveryServerOptions, RecoveryLogReader, serverEnvironment } from './recover.start';

const L = (s: string) => `2026-11-25 14:05:01.100 UTC [4245] ${s}`;

describe('RecoveryLogReader fed as the log grows', () => {
  it('a line split across two reads counts once, when complete', () => {
    const r = new RecoveryLogReader();
    const line = L('LOG:  restored log file "000000010000000000000002" from archive\n');
    r.feed(line.slice(0, 30));
    expect(r.state().outcome.walFilesRestored).toBe(0);
    r.feed(line.slice(30));
    expect(r.state().outcome.walFilesRestored).toBe(1);
    expect(r.segmentsRestored).toBe(1);
  });

  it('remembers the restored segment furthest along, across timelines', () => {
    const r = new RecoveryLogReader();
    for (const f of ['000000010000000000000003', '000000020000000000000004', '00000002.history'])
      r.feed(L(`LOG:  restored log file "${f}" from archive\n`));
    expect(r.state().outcome.lastSegmentRestored).toBe('000000020000000000000004');
  });

  it('history files are WAL files restored but not replayed segments', () => {
    const r = new RecoveryLogReader();
    r.feed(
      [
        L('LOG:  restored log file "00000002.history" from archive'),
        L('LOG:  restored log file "000000020000000000000003" from archive'),
        L('LOG:  restored log file "000000020000000000000004" from archive'),
        '',
      ].join('\n'),
    );
    expect(r.state().outcome.walFilesRestored).toBe(3);
    expect(r.segmentsRestored).toBe(2);
  });

  it("a client's FATAL (another pid than the startup process's) is no recovery failure", () => {
    const r = new RecoveryLogReader();
    r.feed(
      [
        L('LOG:  starting point-in-time recovery to earliest consistent point'),
        L('LOG:  restored log file "000000010000000000000002" from archive'),
        '2026-11-25 14:05:02.100 UTC [5001] FATAL:  password authentication failed for user "monitor"',
        '',
      ].join('\n'),
    );
    expect(r.state().lastFatal).toBeUndefined();
    r.feed(L('FATAL:  could not open file "pg_wal/000000010000000000000003": Permission denied\n'));
    expect(r.state().lastFatal).toMatch(/could not open file/);
  });

  it('keeps the last lines for an error message', () => {
    const r = new RecoveryLogReader();
    for (let i = 0; i < 30; i++) r.feed(L(`LOG:  line ${i}\n`));
    expect(r.tail).toHaveLength(20);
    expect(r.tail[19]).toContain('line 29');
  });

  it('end() takes a last line without a newline', () => {
    const r = new RecoveryLogReader();
    r.feed(L('LOG:  database system is ready to accept connections'));
    expect(r.state().promoted).toBe(false);
    r.end();
    expect(r.state().promoted).toBe(true);
  });
});

describe('LogFollower', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'dbcrate-logfollow-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('returns only what was appended since the last read, a split UTF-8 character whole', async () => {
    const f = join(dir, 'x.log');
    writeFileSync(f, 'one\n');
    const follow = new LogFollower(f);
    try {
      expect(await follow.read()).toBe('one\n');
      expect(await follow.read()).toBe('');
      const euro = Buffer.from('€\n');
      appendFileSync(f, Buffer.concat([Buffer.from('two '), euro.subarray(0, 1)]));
      expect(await follow.read()).toBe('two ');
      appendFileSync(f, euro.subarray(1));
      expect(await follow.read()).toBe('€\n');
    } finally {
      await follow.close();
    }
  });
});

describe('the recovered server', () => {
  it('logs in English whatever the locale: lc_messages=C on its command line', () => {
    expect(recoveryServerOptions(5433)).toMatch(/-c lc_messages=C(\s|$)/);
    expect(recoveryServerOptions(5433)).toMatch(/^-p 5433 /);
    expect(recoveryServerOptions(5433)).toMatch(/-c log_min_messages=warning(\s|$)/);
  });

  it('does not inherit the variables named (the passphrase)', () => {
    process.env.DBCRATE_TEST_SECRET_VAR = 'x';
    try {
      expect(serverEnvironment(['DBCRATE_TEST_SECRET_VAR']).DBCRATE_TEST_SECRET_VAR).toBeUndefined();
      expect(serverEnvironment().DBCRATE_TEST_SECRET_VAR).toBeUndefined();
    } finally {
      delete process.env.DBCRATE_TEST_SECRET_VAR;
    }
  });

  it('inherits only an allowlist: no storage credentials, PGPASSWORD or dbcrate settings', () => {
    const saved = { ...process.env };
    Object.assign(process.env, {
      AWS_SECRET_ACCESS_KEY: 's',
      PGPASSWORD: 'p',
      DBCRATE_TRUST: 't',
      LC_ALL: 'C',
      TZ: 'UTC',
    });
    try {
      const env = serverEnvironment();
      expect(env.AWS_SECRET_ACCESS_KEY).toBeUndefined();
      expect(env.PGPASSWORD).toBeUndefined();
      expect(env.DBCRATE_TRUST).toBeUndefined();
      expect(env).toEqual(expect.objectContaining({ LC_ALL: 'C', TZ: 'UTC', PATH: process.env.PATH }));
      // recover --archive: archive_command may need the rest, never the passphrase
      const all = serverEnvironment(['PGPASSWORD'], { all: true });
      expect(all.AWS_SECRET_ACCESS_KEY).toBe('s');
      expect(all.PGPASSWORD).toBeUndefined();
    } finally {
      for (const k of ['AWS_SECRET_ACCESS_KEY', 'PGPASSWORD', 'DBCRATE_TRUST', 'LC_ALL', 'TZ'])
        if (saved[k] === undefined) delete process.env[k];
        else process.env[k] = saved[k];
    }
  });
});
