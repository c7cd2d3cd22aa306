import * as fs from 'node:fs';
import { join } from 'node:path';
import {
  attachCluster,
  freePort,
  pitrServerOf,
  runCliAs,
  sampleDatabase,
  waitArchived,
  type PgCluster,
  type PitrServer,
} from '@dbcrate/testing';
import { checksums } from './e2e.fixture';
import {
  cleanup,
  explain,
  cli,
  PASSPHRASE,
  PASSPHRASE_ENV,
  preparePitr,
  startArchivingCluster,
  WORKLOAD_SCHEMA,
  workloadStep,
  type PitrEnv,
  type RecoverJson,
} from './pitr.fixture';

const DB = 'pitr_secrets';
const isRoot = process.getuid?.() === 0;
const CREDENTIALS = {
  AWS_SECRET_ACCESS_KEY: 'e2e-aws-secret-0b1c',
  PGPASSWORD: 'e2e-libpq-password-7f3d',
};

/**
 * No secret reaches the recovered server: `recover --start --passphrase-env` keeps the
 * decrypted key in its own memory and serves WAL to restore_command over a private socket.
 * recover runs as root with a key only root can read, as an operator would; the server runs
 * as postgres. Every WAL file goes through restore_command (no spool), so the socket is what
 * recovery actually used.
 */
(isRoot ? describe : describe.skip)('point-in-time recovery: no secret reaches the recovered server', () => {
  let env: PitrEnv;
  let pg: PgCluster;
  let srv: PitrServer;
  let rec: PitrServer;
  let keyDir: string;
  let rootKey: string;
  let expected: unknown[];
  let targetDir: string;
  let json: RecoverJson;
  let paused: PitrServer | undefined;
  let pausedDir: string;

  beforeAll(async () => {
    env = await preparePitr('secrets');
    pg = await startArchivingCluster(env);
    srv = pitrServerOf(pg);
    await pg.createDatabase(DB);
    await sampleDatabase(pg.url(DB), { rows: 300 });
    await pg.psql(WORKLOAD_SCHEMA, DB);
    const b = await cli(['basebackup', '--db', pg.url(DB), '--to', env.dest, '--recipient', env.keys.pub]);
    if (b.code !== 0) throw new Error(`basebackup failed: ${explain(b, srv)}`);
    await workloadStep(pg, DB, 1);
    await pg.psql('SELECT pg_switch_wal()');
    await workloadStep(pg, DB, 2);
    expected = await checksums(pg.url(DB));
    await waitArchived(srv);
    keyDir = fs.mkdtempSync('/tmp/dbcrate-rootkey-');
    fs.chmodSync(keyDir, 0o700);
    rootKey = join(keyDir, 'org.key.asc');
    fs.copyFileSync(env.keys.priv, rootKey);
    fs.chownSync(rootKey, 0, 0);
    fs.chmodSync(rootKey, 0o600);
  });

  beforeAll(() => {
    pausedDir = join(env.root, 'recovered-paused');
  });

  afterAll(async () => {
    await rec?.stop();
    await paused?.stop();
    await cleanup(env);
    await pg?.stop();
    fs.rmSync(keyDir, { recursive: true, force: true });
  });

  it('recover --start --passphrase-env (as root) reaches its target with WAL served over the socket', async () => {
    targetDir = join(env.root, 'recovered-secrets');
    const port = await freePort();
    const r = await runCliAs(
      [
        'recover',
        '--from',
        env.dest,
        '--key',
        rootKey,
        '--passphrase-env',
        PASSPHRASE_ENV,
        '--target-dir',
        targetDir,
        '--latest',
        '--start',
        '--port',
        String(port),
        '--spool-depth',
        '0',
        '--json',
      ],
      {
        asPostgres: false,
        // Storage credentials and a libpq password as an operator's shell would hold them.
        env: { [PASSPHRASE_ENV]: PASSPHRASE, ...CREDENTIALS },
        timeoutMs: 120_000,
      },
    );
    rec = attachCluster({
      dataDir: targetDir,
      port,
      superuser: pg.superuser,
      password: pg.password,
      binDir: pg.binDir,
    });
    expect({ code: r.code, out: explain(r, rec) }).toEqual(expect.objectContaining({ code: 0 }));
    json = JSON.parse(r.stdout) as RecoverJson;
    expect(json.state).toBe('promoted');
    expect(json.walFilesRestored).toBeGreaterThan(1);
    expect(await checksums(rec.url(DB))).toEqual(expected);
    const log = fs.readFileSync(json.logFile, 'utf8');
    expect(log).toMatch(/restored log file "[0-9A-F]{24}" from archive/);
  });

  it("the server's environment does not hold the passphrase", async () => {
    const rows = await rec.query<{ l: string }>(
      `CREATE TEMP TABLE e (l text); COPY e FROM PROGRAM 'env'; SELECT l FROM e`,
    );
    expect(rows.length).toBeGreaterThan(0);
    const env = rows.map((r) => r.l).join('\n');
    expect(env).not.toContain(PASSPHRASE);
    expect(env).not.toContain(PASSPHRASE_ENV);
  });

  it("the server's environment holds none of recover's credentials (storage keys, PGPASSWORD)", async () => {
    const rows = await rec.query<{ l: string }>(
      `CREATE TEMP TABLE e2 (l text); COPY e2 FROM PROGRAM 'env'; SELECT l FROM e2`,
    );
    const env = rows.map((r) => r.l).join('\n');
    expect(env).toMatch(/^PATH=/m);
    for (const [k, v] of Object.entries(CREDENTIALS)) {
      expect(env).not.toContain(v);
      expect(env).not.toMatch(new RegExp(`^${k}=`, 'm'));
    }
  });

  it('the server cannot read the private key', async () => {
    await expect(rec.query(`SELECT pg_read_file('${rootKey}')`)).rejects.toThrow(/permission denied/i);
  });

  it('restore_command is gone from the configuration after promotion, and no key path is left there', () => {
    const auto = fs.readFileSync(join(targetDir, 'postgresql.auto.conf'), 'utf8');
    expect(auto).not.toMatch(/^\s*restore_command/m);
    expect(auto).not.toContain(rootKey);
    expect(auto).not.toContain(PASSPHRASE);
    for (const f of ['postgresql.conf', 'postmaster.opts']) {
      const p = join(targetDir, f);
      if (fs.existsSync(p)) expect(fs.readFileSync(p, 'utf8')).not.toContain(PASSPHRASE);
    }
  });

  it('as root, the prefetch spool lives under a root-owned parent, not in pg_wal (which the server user owns)', async () => {
    const dir = pausedDir;
    const port = await freePort();
    const r = await runCliAs(
      [
        'recover',
        '--from',
        env.dest,
        '--key',
        rootKey,
        '--passphrase-env',
        PASSPHRASE_ENV,
        '--target-dir',
        dir,
        '--immediate',
        '--action',
        'pause',
        '--start',
        '--port',
        String(port),
        '--log-level',
        'debug',
        '--json',
      ],
      { asPostgres: false, env: { [PASSPHRASE_ENV]: PASSPHRASE }, timeoutMs: 120_000 },
    );
    paused = attachCluster({
      dataDir: dir,
      port,
      superuser: pg.superuser,
      password: pg.password,
      binDir: pg.binDir,
    });
    expect({ code: r.code, out: explain(r, paused) }).toEqual(expect.objectContaining({ code: 0 }));
    expect((JSON.parse(r.stdout) as RecoverJson).state).toBe('paused');
    const m = /"spool":"(\/[^"]*dbcrate-spool-[^/"]+)\/spool"/.exec(r.stderr);
    expect({ spool: m?.[1], stderr: r.stderr.slice(-2000) }).toEqual(
      expect.objectContaining({ spool: expect.any(String) }),
    );
    // paused: restore_command stays (resuming needs a new recover), naming that spool
    const auto = fs.readFileSync(join(dir, 'postgresql.auto.conf'), 'utf8');
    expect(auto).toContain(`s=${m![1]}/spool;`);
    expect(auto).not.toContain('pg_wal/dbcrate-prefetch');
    // the timeline the plan checked, not 'latest' (which a history file archived meanwhile could move)
    expect(auto).toMatch(/^recovery_target_timeline = '1'$/m);
    expect(fs.existsSync(m![1])).toBe(false); // removed when recover ended
    expect(fs.existsSync(join(dir, 'pg_wal', 'dbcrate-prefetch'))).toBe(false);
  });
});
