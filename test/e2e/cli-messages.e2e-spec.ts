import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '@dbcrate/testing';

/**
 * What a new user hits first, through the built CLI: one clear line and the right exit code
 * for a missing flag, a misspelt config key, a mistyped destination; help that shows the
 * options every command takes; no secret of a URL echoed back.
 */
describe('CLI messages', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-msgs-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const oneLine = (stderr: string) => {
    expect(stderr).not.toMatch(/\n\s+at .+:\d+:\d+|Invalid input|received undefined/);
  };

  it('a missing flag names the flag, what it is for, and where else it can be set (exit 2)', async () => {
    const r = await runCli(['restore', 'latest']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('missing --from');
    expect(r.stderr).toContain('DBCRATE_FROM');
    oneLine(r.stderr);
  });

  it('an unknown key in the config file is refused with the closest known one (exit 2)', async () => {
    const cfg = join(dir, 'typo.yaml');
    writeFileSync(cfg, 'recipients: /k.asc\n');
    const r = await runCli(['snapshots', '--from', `file://${dir}`, '--config', cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('unknown setting "recipients"');
    expect(r.stderr).toContain('did you mean "recipient"');
    const ok = join(dir, 'ok.yaml');
    writeFileSync(ok, `from: file://${dir}\nlog-level: warn\n`);
    expect((await runCli(['snapshots', '--config', ok])).code).toBe(0);
  });

  it('subcommand help shows the global options', async () => {
    const r = await runCli(['windows', '--help']);
    expect(r.code).toBe(0);
    for (const o of ['--config', '--log-level', '--progress']) expect(r.stdout).toContain(o);
  });

  it('snapshots and windows of a missing folder or a plain file fail (exit 4), not "no snapshots"', async () => {
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    for (const cmd of ['snapshots', 'windows']) {
      for (const where of [join(dir, 'missing'), file]) {
        const r = await runCli([cmd, '--from', `file://${where}`]);
        expect(r.code).toBe(4);
        expect(r.stderr).toMatch(/does not exist|is a file, not a folder/);
        oneLine(r.stderr);
      }
    }
  });

  it('recover checks the target and the key before it goes near the destination', async () => {
    const full = join(dir, 'full-target');
    mkdirSync(full);
    writeFileSync(join(full, 'PG_VERSION'), '15\n');
    // A destination that cannot even be parsed, and one that would hang on connecting.
    for (const from of ['bogus://x', 'sftp://u@127.0.0.1:1/x']) {
      const notEmpty = await runCli([
        'recover',
        '--from',
        from,
        '--key',
        '/nonexistent.asc',
        '--target-dir',
        full,
        '--latest',
        '--allow-unsigned',
      ]);
      expect(notEmpty.code).toBe(8);
      expect(notEmpty.stderr).toContain('[E_TARGET_NOT_EMPTY]');
      const noKey = await runCli([
        'recover',
        '--from',
        from,
        '--key',
        '/nonexistent.asc',
        '--target-dir',
        join(dir, 'new-target'),
        '--latest',
        '--allow-unsigned',
      ]);
      expect(noKey.code).toBe(5);
      expect(noKey.stderr).toContain('cannot read private key /nonexistent.asc');
    }
  });

  it('storage check of a folder that cannot be created fails at once with why', async () => {
    const r = await runCli(['storage', 'check', 'file:///proc/dbcrate-x'], { timeoutMs: 20_000 });
    expect(r.signal).toBeNull();
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('cannot create the folder /proc/dbcrate-x');
  });

  it('secrets in a destination URL are not echoed', async () => {
    const r = await runCli([
      'storage',
      'check',
      's3://b/p?endpoint=http://127.0.0.1:1&secret_access_key=S3CR3TKEY&X-Amz-Signature=S1GNATURE',
    ]);
    expect(r.code).not.toBe(0);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/S3CR3TKEY|S1GNATURE/);
  });

  it('an agent started as another user than the cluster owner says so at once (exit 2)', async () => {
    expect(process.getuid?.()).toBe(0);
    const data = join(dir, 'pgdata');
    mkdirSync(data);
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(data, uid, uid);
    const r = await runCli(
      ['agent', '--pgdata', data, '--to', `file://${dir}/wal`, '--recipient', '/nonexistent.asc'],
      {
        timeoutMs: 20_000,
      },
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`belongs to postgres (uid ${uid}), who runs archive_command`);
    expect(r.stderr).toContain('runuser -u postgres -- dbcrate agent');
  });
});
