/**
 * The WAL channel between archive_command and the agent cannot be lied to: a fake agent on
 * the socket path (no secret, a wrong MAC, another owner, a directory others can write)
 * never makes `dbcrate wal-push` or the native client exit 0; a wedged agent times out;
 * an agent serving other settings refuses the push. Both clients against the real agent.
 * Needs `npm run build` (the CLI in dist/ and dist/native/dbcrate-wal-push).
 */
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import * as fs from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  giveToPostgres,
  postgresOsUser,
  removeTestSigning,
  runCli,
  startPgCluster,
  testSigning,
  type CliResult,
  type PgCluster,
} from '@dbcrate/testing';
import { agentSocketPath, checkSocketDir, privateTmpDir } from '@dbcrate/pitr';
import { generateKeys } from './e2e.fixture';
import { cleanup, cli, preparePitr, startAgent, type PitrEnv } from './pitr.fixture';

const NATIVE = join(__dirname, '..', '..', 'dist', 'native', 'dbcrate-wal-push');

function runNative(
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; asPostgres?: boolean; timeoutMs?: number } = {},
): Promise<CliResult & { ms: number }> {
  return new Promise((resolve, reject) => {
    const pgUser = postgresOsUser();
    const started = Date.now();
    const child = spawn(NATIVE, args, {
      cwd: opts.cwd,
      env: { PATH: process.env.PATH, ...opts.env },
      ...(opts.asPostgres && process.getuid?.() === 0 ? { uid: pgUser.uid, gid: pgUser.gid } : {}),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) =>
    fs.statSync(join(dir, f)).isFile(),
  );
}

/** A listener on `path` that answers every request with `answer` (or never, when undefined). */
async function fakeAgent(path: string, answer: string | undefined): Promise<Server> {
  const server = createServer((sock) => {
    sock.on('error', () => undefined);
    sock.on('data', () => {
      if (answer !== undefined) sock.end(answer);
    });
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  return server;
}

const close = (s: Server | undefined) => new Promise<void>((r) => (s ? s.close(() => r()) : r()));

describe('agent channel: a fake agent never makes wal-push exit 0', () => {
  let pg: PgCluster;
  let env: PitrEnv;
  let seg: string;
  let fake: string;
  let pgdata: string;
  let segPath: string;
  let dest: string;
  let pub: string;
  let server: Server | undefined;

  beforeAll(async () => {
    env = await preparePitr('agentch');
    pg = await startPgCluster({ settings: { archive_mode: 'on', archive_command: '/bin/false' } });
    await pg.psql('CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g; SELECT pg_switch_wal();');
    const status = join(pg.dataDir, 'pg_wal', 'archive_status');
    for (let i = 0; i < 100 && !seg; i++) {
      seg =
        fs
          .readdirSync(status)
          .find((f) => /^[0-9A-F]{24}\.ready$/.test(f))
          ?.slice(0, 24) ?? '';
      if (!seg) await new Promise((r) => setTimeout(r, 100));
    }
    expect(seg).toBeTruthy();
    // a root-owned data directory with a copy of the segment, for the fake agents
    fake = fs.mkdtempSync(join(tmpdir(), 'dbcrate-fake-agent-'));
    pgdata = join(fake, 'pgdata');
    fs.mkdirSync(join(pgdata, 'pg_wal'), { recursive: true, mode: 0o700 });
    segPath = join(pgdata, 'pg_wal', seg);
    fs.copyFileSync(join(pg.dataDir, 'pg_wal', seg), segPath);
    dest = join(fake, 'dest');
    pub = (await generateKeys('agentch-root')).pub;
  }, 120_000);

  afterEach(async () => {
    await close(server);
    server = undefined;
    const sock = join(pgdata, 'pg_wal', 'dbcrate-agent.sock');
    fs.rmSync(sock, { force: true });
    fs.rmSync(`${sock}.secret`, { force: true });
    fs.chmodSync(join(pgdata, 'pg_wal'), 0o700);
  });

  afterAll(async () => {
    await cleanup(env);
    await pg?.stop();
    if (fake) fs.rmSync(fake, { recursive: true, force: true });
  });

  const sockPath = () => join(pgdata, 'pg_wal', 'dbcrate-agent.sock');
  const pushArgs = () => [segPath, '--pgdata', pgdata, '--to', `file://${dest}`, '--recipient', pub];
  const node = () => runCli(['wal-push', ...pushArgs()], { env: { DBCRATE_AGENT_TIMEOUT_MS: '3000' } });
  const native = () => runNative(pushArgs(), { env: { DBCRATE_AGENT_TIMEOUT_MS: '3000' } });
  const OK = '{"ok":true,"outcome":"archived"}\n';

  it.each([
    ['answers ok, no secret file', OK, undefined, /no (readable )?secret file/],
    ['answers ok without a MAC', OK, 'secret', /did not authenticate/],
    ['answers ok with a made-up MAC', `${OK}${'ab'.repeat(32)}\n`, 'secret', /did not authenticate/],
    // the native client used to crash on this (a NULL newline pointer), killed by a signal
    [
      'answers a NUL byte before its newline',
      `\u0000${OK}${'ab'.repeat(32)}\n`,
      'secret',
      /malformed|did not authenticate/,
    ],
    ['streams an answer without end', 'x'.repeat(100_000), 'secret', /longer than 64 KiB/],
  ])('a fake agent that %s: both clients exit 4, nothing archived', async (_what, answer, secret, why) => {
    server = await fakeAgent(sockPath(), answer);
    if (secret) fs.writeFileSync(`${sockPath()}.secret`, 'cd'.repeat(32) + '\n', { mode: 0o600 });
    for (const r of [await node(), await native()]) {
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(why);
      expect(r.stderr).toMatch(/E_AGENT/);
    }
    expect(filesUnder(dest)).toEqual([]);
  });

  it('a socket owned by another user is refused by both clients', async () => {
    server = await fakeAgent(sockPath(), OK);
    fs.chownSync(sockPath(), 65534, 65534); // nobody
    for (const r of [await node(), await native()]) {
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(/owned by (uid 65534|another user)/);
    }
    expect(filesUnder(dest)).toEqual([]);
  });

  it('a socket in a directory other users can write is refused by both clients', async () => {
    server = await fakeAgent(sockPath(), OK);
    fs.chmodSync(join(pgdata, 'pg_wal'), 0o777);
    for (const r of [await node(), await native()]) {
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(/writable by other users/);
    }
    expect(filesUnder(dest)).toEqual([]);
  });

  it('a wedged agent (accepts, never answers): both clients give up after DBCRATE_AGENT_TIMEOUT_MS, exit 4', async () => {
    server = await fakeAgent(sockPath(), undefined);
    fs.writeFileSync(`${sockPath()}.secret`, 'cd'.repeat(32) + '\n', { mode: 0o600 });
    const n = await runNative(pushArgs(), { env: { DBCRATE_AGENT_TIMEOUT_MS: '1500' } });
    expect(n.code).toBe(4);
    expect(n.stderr).toMatch(/did not answer within 1500 ms/);
    expect(n.ms).toBeLessThan(15_000);
    const r = await runCli(['wal-push', ...pushArgs()], { env: { DBCRATE_AGENT_TIMEOUT_MS: '1500' } });
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/did not answer within 1.5 s/);
  });

  it('a fake agent that knows the MAC scheme but not the secret cannot forge an answer', async () => {
    const nonceMac = (nonce: string) =>
      createHmac('sha256', 'ef'.repeat(32)).update(`${nonce}\n${OK.trim()}`);
    server = createServer((sock) => {
      sock.on('error', () => undefined);
      sock.on('data', (d) => {
        const nonce = (JSON.parse(String(d).split('\n')[0]) as { nonce: string }).nonce;
        sock.end(`${OK}${nonceMac(nonce).digest('hex')}\n`);
      });
    });
    await new Promise<void>((r) => server!.listen(sockPath(), () => r()));
    fs.writeFileSync(`${sockPath()}.secret`, 'cd'.repeat(32) + '\n', { mode: 0o600 });
    for (const r of [await node(), await native()]) {
      expect(r.code).toBe(4);
      expect(r.stderr).toMatch(/did not authenticate/);
    }
    expect(filesUnder(dest)).toEqual([]);
  });

  it('an authenticated "ok" that is not the outcome of a push (a ping’s "alive") is not success', async () => {
    const secret = 'ef'.repeat(32);
    let answerLine = '';
    server = createServer((sock) => {
      sock.on('error', () => undefined);
      sock.on('data', (d) => {
        const nonce = (JSON.parse(String(d).split('\n')[0]) as { nonce: string }).nonce;
        const mac = createHmac('sha256', secret).update(`${nonce}\n${answerLine}`).digest('hex');
        sock.end(`${answerLine}\n${mac}\n`);
      });
    });
    await new Promise<void>((r) => server!.listen(sockPath(), () => r()));
    fs.writeFileSync(`${sockPath()}.secret`, secret + '\n', { mode: 0o600 });
    answerLine = '{"ok":true,"outcome":"alive"}';
    for (const r of [await node(), await native()]) {
      expect(`${r.code} ${r.stderr}`).toMatch(/^4 .*not an archived file/s);
    }
    // the same listener with a push's outcome: the MAC is right, so this is what makes exit 0
    answerLine = '{"ok":true,"outcome":"archived","key":"k"}';
    for (const r of [await node(), await native()]) expect(`${r.code} ${r.stderr}`).toBe('0 ');
  });

  it('a long data directory: both clients find the socket in the same private temp directory', async () => {
    const long = join(fake, 'l'.repeat(60), 'o'.repeat(60));
    fs.mkdirSync(join(long, 'pg_wal'), { recursive: true, mode: 0o700 });
    const sock = agentSocketPath(long);
    expect(sock.startsWith(privateTmpDir())).toBe(true);
    checkSocketDir(sock, { create: true });
    server = await fakeAgent(sock, OK);
    try {
      const args = [segPath, '--pgdata', long, '--to', `file://${dest}`, '--recipient', pub];
      // without a socket there, each would fall back to pushing by itself and exit 0
      for (const r of [await runCli(['wal-push', ...args]), await runNative(args)]) {
        expect(r.code).toBe(4);
        expect(r.stderr).toContain(sock);
      }
      expect(filesUnder(dest)).toEqual([]);
    } finally {
      await close(server);
      server = undefined;
      fs.rmSync(sock, { force: true });
    }
  });

  describe('the real agent', () => {
    let other: string;

    beforeAll(async () => {
      await startAgent(env, pg.dataDir);
      other = join(env.root, 'other.yaml');
      fs.mkdirSync(join(env.root, 'other-dest'));
      giveToPostgres(join(env.root, 'other-dest'), 0o700);
      fs.writeFileSync(
        other,
        `to: file://${join(env.root, 'other-dest')}\nrecipient:\n  - ${env.keys.pub}\n`,
      );
      giveToPostgres(other, 0o600);
    }, 60_000);

    it('the native client and dbcrate wal-push get an authenticated ok (exit 0) from it', async () => {
      const n = await runNative([`pg_wal/${seg}`, '--config', env.configFile], {
        cwd: pg.dataDir,
        asPostgres: true,
      });
      expect(`${n.code} ${n.stderr}`).toBe('0 ');
      const abs = join(pg.dataDir, 'pg_wal', seg);
      const r = await cli(['wal-push', abs, '--config', env.configFile, '--pgdata', pg.dataDir]);
      expect(`${r.code} ${r.stderr}`).toMatch(/^0 /);
      expect(filesUnder(env.destDir).some((f) => f.includes(seg))).toBe(true);
    });

    it('a segment the seal worker refuses comes back with its own error and exit code; nothing stored', async () => {
      // The agent reads, checks and seals segments on its worker threads: their errors must
      // keep the code and hint that the archiver gives (a thrown error would lose them).
      const good = fs.readFileSync(join(pg.dataDir, 'pg_wal', seg));
      const foreign = Buffer.from(good);
      foreign.writeBigUInt64LE(12345n, 24); // another cluster's system identifier
      const cases: [string, Buffer, number, RegExp][] = [
        ['0000000100000000000000F1', foreign, 9, /belongs to the cluster with system identifier 12345/],
        [
          '0000000100000000000000F2',
          good.subarray(0, good.length - 8192),
          6,
          /is \d+ bytes; its header says/,
        ],
        ['0000000100000000000000F3', Buffer.alloc(good.length), 6, /does not start with a WAL page header/],
      ];
      for (const [name, content, code, message] of cases) {
        const path = join(pg.dataDir, 'pg_wal', name);
        fs.writeFileSync(path, content);
        giveToPostgres(path, 0o600);
        try {
          const n = await runNative([`pg_wal/${name}`, '--config', env.configFile], {
            cwd: pg.dataDir,
            asPostgres: true,
          });
          expect(`${n.code} ${n.stderr}`).toMatch(new RegExp(`^${code} [^]*${message.source}`));
          const r = await cli(['wal-push', path, '--config', env.configFile, '--pgdata', pg.dataDir]);
          expect(`${r.code} ${r.stderr}`).toMatch(new RegExp(`^${code} [^]*${message.source}`));
          expect(r.stderr).toMatch(/hint: /);
          expect(filesUnder(env.destDir).some((f) => f.includes(name))).toBe(false);
        } finally {
          fs.rmSync(path, { force: true });
        }
      }
    });

    it('a push configured for another destination is refused (exit 2), not archived to the agent’s', async () => {
      const n = await runNative([`pg_wal/${seg}`, '--config', other], { cwd: pg.dataDir, asPostgres: true });
      expect(n.code).toBe(2);
      expect(n.stderr).toMatch(/serves other settings than this wal-push was given: destination/);
      const r = await cli([
        'wal-push',
        join(pg.dataDir, 'pg_wal', seg),
        '--config',
        other,
        '--pgdata',
        pg.dataDir,
      ]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/serves other settings/);
      expect(filesUnder(join(env.root, 'other-dest'))).toEqual([]);
    });

    it('another database id or other recipients are refused too', async () => {
      const id = await cli([
        'wal-push',
        join(pg.dataDir, 'pg_wal', seg),
        ...['--config', env.configFile, '--database-id', 'elsewhere', '--pgdata', pg.dataDir],
      ]);
      expect(id.code).toBe(2);
      expect(id.stderr).toMatch(/database id "elsewhere"/);
      const keys = await generateKeys('agentch-other');
      giveToPostgres(keys.dir, 0o755);
      giveToPostgres(keys.pub, 0o644);
      const rc = await runNative([`pg_wal/${seg}`, '--config', env.configFile, '--recipient', keys.pub], {
        cwd: pg.dataDir,
        asPostgres: true,
      });
      expect(rc.code).toBe(2);
      expect(rc.stderr).toMatch(/recipients/);
    });

    it('a push configured with another signing key is refused (its WAL would be signed by the wrong host)', async () => {
      const other = await testSigning('agentch-other-signer');
      try {
        const r = await cli([
          'wal-push',
          join(pg.dataDir, 'pg_wal', seg),
          ...['--config', env.configFile, '--signing-key', other.keyFile, '--pgdata', pg.dataDir],
        ]);
        expect(r.code).toBe(2);
        expect(r.stderr).toMatch(new RegExp(`signing key ${other.fingerprint}`));
        const yaml = join(env.root, 'other-signer.yaml');
        fs.writeFileSync(
          yaml,
          `${fs.readFileSync(env.configFile, 'utf8').replace(/^signing-key:.*\n/m, '')}signing-key: ${other.keyFile}\n`,
        );
        giveToPostgres(yaml, 0o600);
        const n = await runNative([`pg_wal/${seg}`, '--config', yaml], { cwd: pg.dataDir, asPostgres: true });
        expect(n.code).toBe(2);
        expect(n.stderr).toMatch(/signing key/);
        // the native client forwards --signing-key and DBCRATE_SIGNING_KEY too (it dropped both,
        // and the agent signed with its own key: exit 0)
        const flag = await runNative(
          [`pg_wal/${seg}`, '--config', env.configFile, '--signing-key', other.keyFile],
          {
            cwd: pg.dataDir,
            asPostgres: true,
          },
        );
        expect(`${flag.code} ${flag.stderr}`).toMatch(
          new RegExp(`^2 .*signing key ${other.fingerprint}`, 's'),
        );
        const viaEnv = await runNative([`pg_wal/${seg}`, '--config', env.configFile], {
          cwd: pg.dataDir,
          asPostgres: true,
          env: { DBCRATE_SIGNING_KEY: other.keyFile },
        });
        expect(`${viaEnv.code} ${viaEnv.stderr}`).toMatch(
          new RegExp(`^2 .*signing key ${other.fingerprint}`, 's'),
        );
      } finally {
        removeTestSigning(other);
      }
    });
  });
});
