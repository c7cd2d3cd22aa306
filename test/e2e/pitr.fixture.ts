import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { agentSocketPath } from '@dbcrate/pitr';
import {
  attachCluster,
  CLI_ENTRY,
  freePort,
  giveToPostgres,
  postgresTempDir,
  runCliAs,
  spawnCliAs,
  startPgCluster,
  type CliProcess,
  type PgCluster,
  type PitrServer,
} from '@dbcrate/testing';
import { checksums, generateKeys, PASSPHRASE, type KeyPair } from './e2e.fixture';

export { PASSPHRASE };

/** The environment variable the passphrase travels in (never on a command line). */
export const PASSPHRASE_ENV = 'E2E_PITR_PASSPHRASE';

/** PostgreSQL 15's XLOG_PAGE_MAGIC, the first two bytes (little-endian) of every WAL page. */
export const XLOG_PAGE_MAGIC_PG15 = 0xd110;

export const WAL_SEGMENT_BYTES = 16 * 1024 * 1024;

/**
 * One PITR setup: keys readable by postgres, a file:// destination owned by postgres, the
 * YAML that archive_command points to, and the archive_command itself.
 */
export interface PitrEnv {
  name: string;
  keys: KeyPair;
  /** postgres-owned temp directory holding dest/, the YAML, recovered clusters, gpg home. */
  root: string;
  destDir: string;
  dest: string;
  configFile: string;
  archiveCommand: string;
  /** Clusters and agents to stop in cleanup(). */
  servers: PitrServer[];
  agents: CliProcess[];
  /** Server logs of recovered clusters, kept when they are stopped (for secret checks). */
  logs: string[];
  /** Agent sockets to remove in cleanup() (a killed agent leaves its socket file behind). */
  sockets: string[];
}

export async function preparePitr(name: string): Promise<PitrEnv> {
  const keys = await generateKeys(`pitr-${name}`);
  // postgres runs archive_command (wal-push: public key) and restore_command (wal-fetch: private key).
  giveToPostgres(keys.dir, 0o700);
  giveToPostgres(keys.pub, 0o644);
  giveToPostgres(keys.priv, 0o600);
  const root = postgresTempDir(`dbcrate-pitr-${name}-`);
  const destDir = join(root, 'dest');
  fs.mkdirSync(destDir);
  giveToPostgres(destDir, 0o700);
  const configFile = join(root, 'wal.yaml');
  // The signing key in the file, not only in the environment: a recovered server started with
  // --archive inherits no DBCRATE_* variables, and its archive_command reads this file.
  const signing = process.env.DBCRATE_SIGNING_KEY ? `signing-key: ${process.env.DBCRATE_SIGNING_KEY}\n` : '';
  fs.writeFileSync(configFile, `to: file://${destDir}\nrecipient:\n  - ${keys.pub}\n${signing}`);
  giveToPostgres(configFile, 0o600);
  return {
    name,
    keys,
    root,
    destDir,
    dest: `file://${destDir}`,
    configFile,
    archiveCommand: `${process.execPath} ${CLI_ENTRY} wal-push %p --config ${configFile}`,
    servers: [],
    agents: [],
    logs: [],
    sockets: [],
  };
}

/** A throwaway cluster that archives through `dbcrate wal-push` into env.dest. */
export function startArchivingCluster(
  env: PitrEnv,
  settings: Record<string, string | number | boolean> = {},
): Promise<PgCluster> {
  return startPgCluster({
    settings: {
      wal_level: 'replica',
      archive_mode: 'on',
      archive_command: env.archiveCommand,
      // pg_current_wal_lsn() after a commit must include the commit record.
      synchronous_commit: 'on',
      // no background commits between our marks
      autovacuum: 'off',
      // keep archived segments in pg_wal so the tests can compare bytes
      wal_keep_size: '2GB',
      max_wal_senders: 5,
      ...settings,
    },
  });
}

/**
 * `dbcrate agent --pgdata DIR --config YAML` as postgres, once it says it is archiving;
 * stopped by cleanup().
 */
export async function startAgent(
  env: PitrEnv,
  dataDir: string,
  opts: { env?: NodeJS.ProcessEnv } = {},
): Promise<CliProcess> {
  const agent = spawnCliAs(['agent', '--pgdata', dataDir, '--config', env.configFile], { env: opts.env });
  env.agents.push(agent);
  // its default socket (in pg_wal, or in the temp dir for long paths)
  env.sockets.push(agentSocketPath(dataDir));
  const deadline = Date.now() + 20_000;
  while (!/dbcrate agent: archiving/.test(agent.output())) {
    if (agent.child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`dbcrate agent did not start (exit ${agent.child.exitCode}):\n${agent.output()}`);
    }
    await sleep(100);
  }
  return agent;
}

/**
 * The base backup method the PITR scenarios use: DBCRATE_E2E_BASEBACKUP_METHOD=pgdata |
 * pg_basebackup | auto (default: the CLI's own default, auto, which picks pgdata here).
 */
export const E2E_BASEBACKUP_METHOD = process.env.DBCRATE_E2E_BASEBACKUP_METHOD;

/** Any dbcrate command as postgres, with the passphrase in its environment variable. */
export function cli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {},
) {
  const withMethod =
    args[0] === 'basebackup' && E2E_BASEBACKUP_METHOD && !args.includes('--method')
      ? [...args, '--method', E2E_BASEBACKUP_METHOD]
      : args;
  return runCliAs(withMethod, { ...opts, env: { [PASSPHRASE_ENV]: PASSPHRASE, ...opts.env } });
}

export interface Mark {
  lsn: string;
  time: string;
  sums: unknown[];
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A point to recover to, after the last commit: its LSN, its time (ISO 8601, UTC, ms) and
 * the per-table checksums. Sleeps ~1 s on both sides so that time targets are unambiguous.
 */
export async function mark(pg: { query: PitrServer['query'] }, url: string): Promise<Mark> {
  await sleep(1100);
  const [r] = await pg.query<{ lsn: string; t: Date }>(
    `SELECT pg_current_wal_lsn()::text AS lsn, clock_timestamp() AS t`,
  );
  const sums = await checksums(url);
  await sleep(1100);
  return { lsn: r.lsn, time: r.t.toISOString(), sums };
}

/** `recover --start --json` output (services/cli/src/commands/recover.command.ts). */
export interface RecoverJson {
  databaseId: string;
  backupId: string;
  targetDir: string;
  port: number;
  state: 'promoted' | 'paused' | 'shut down';
  lsn?: string;
  time?: string;
  stoppedAt?: string;
  timeline?: number;
  walFilesRestored: number;
  logFile: string;
  /** --accept-gap: the end of contiguous WAL and the gap recovery stopped at. */
  endLsn?: string;
  acceptedGap?: { timeline: number; firstMissing: string; missing: number; resumesAt: string };
}

export interface Recovered {
  result: Awaited<ReturnType<typeof cli>>;
  /** Parsed stdout, when it was JSON. */
  json?: RecoverJson;
  server: PitrServer;
  targetDir: string;
  port: number;
}

/**
 * `dbcrate recover … --target-dir <root>/<label> --start --port <free>` as postgres; the
 * server it starts is attached (same superuser/password as the source) and registered
 * for cleanup(). Does not assert: callers check result.code and print result.stderr.
 */
export async function recover(
  env: PitrEnv,
  source: PgCluster,
  label: string,
  target: string[],
  extra: string[] = [],
  opts: { timeoutMs?: number; port?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<Recovered> {
  const targetDir = join(env.root, `recovered-${label}`);
  const port = opts.port ?? (await freePort());
  const result = await cli(
    [
      'recover',
      '--from',
      env.dest,
      '--key',
      env.keys.priv,
      '--passphrase-env',
      PASSPHRASE_ENV,
      '--target-dir',
      targetDir,
      ...target,
      '--start',
      '--port',
      String(port),
      '--json',
      ...extra,
    ],
    { timeoutMs: opts.timeoutMs ?? 90_000, env: opts.env },
  );
  let json: RecoverJson | undefined;
  try {
    json = JSON.parse(result.stdout) as RecoverJson;
  } catch {
    json = undefined;
  }
  const server = attachCluster({
    dataDir: targetDir,
    port,
    superuser: source.superuser,
    password: source.password,
    binDir: source.binDir,
  });
  const stop = server.stop;
  server.stop = async () => {
    for (const f of filesUnder(join(targetDir, 'log')))
      env.logs.push(fs.readFileSync(join(targetDir, 'log', f), 'utf8'));
    await stop();
  };
  env.servers.push(server);
  return { result, json, server, targetDir, port };
}

/** Explain a failed CLI run in the assertion message. */
export function explain(
  r: { code: number | null; signal?: NodeJS.Signals | null; stdout: string; stderr: string },
  srv?: PitrServer,
): string {
  const how =
    r.code === null ? `killed by ${r.signal} (the test's timeout: the command did not return)` : r.code;
  return `exit ${how}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}${srv ? `\n--- server log ---\n${srv.logTail()}` : ''}`;
}

export async function cleanup(env: PitrEnv | undefined): Promise<void> {
  if (!env) return;
  await Promise.allSettled(env.agents.map((a) => a.stop('SIGTERM')));
  for (const sock of env.sockets) fs.rmSync(sock, { force: true });
  await Promise.allSettled(env.servers.map((s) => s.stop()));
  fs.rmSync(env.root, { recursive: true, force: true });
  fs.rmSync(env.keys.dir, { recursive: true, force: true });
}

export interface WalObject {
  /** absolute path in the file:// destination */
  file: string;
  walName: string;
  sha256: string;
}

const WAL_OBJECT =
  /^([0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)-([0-9a-f]{64})\.zst\.pgp$/;

/** The archived WAL objects of one database id (temp files and anything else left out), sorted by name. */
export function walObjects(destDir: string, databaseId: string): WalObject[] {
  const dir = join(destDir, databaseId, 'wal');
  return walFiles(dir)
    .map((n) => ({ n, m: WAL_OBJECT.exec(n.split('/').pop()!) }))
    .filter((x): x is { n: string; m: RegExpExecArray } => x.m !== null)
    .map(({ n, m }) => ({ file: join(dir, n), walName: m[1], sha256: m[2] }))
    .sort((a, b) => (a.walName < b.walName ? -1 : a.walName > b.walName ? 1 : 0));
}

/** Everything in the wal/ folder that is not an archived object (temp files of interrupted puts). */
export function walLeftovers(destDir: string, databaseId: string): string[] {
  return walFiles(join(destDir, databaseId, 'wal'))
    .map((n) => n.split('/').pop()!)
    .filter((n) => !WAL_OBJECT.test(n));
}

/** Files under wal/, relative to it: wal/<timeline+log>/…, wal/history/… (format 2) or flat (format 1). */
function walFiles(dir: string): string[] {
  try {
    return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) =>
      fs.statSync(join(dir, f)).isFile(),
    );
  } catch {
    return [];
  }
}

/** A throwaway GNUPGHOME with the private key imported (passphrase on a pipe, loopback pinentry). */
export function gpgHome(env: PitrEnv): string {
  const home = fs.mkdtempSync(join(env.root, 'gnupg-'));
  fs.chmodSync(home, 0o700);
  execFileSync(
    'gpg',
    [
      '--homedir',
      home,
      '--batch',
      '--pinentry-mode',
      'loopback',
      '--passphrase-fd',
      '0',
      '--import',
      env.keys.priv,
    ],
    { input: PASSPHRASE, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  // WAL objects are signed inside: gpg checks the signature, and fails without the signer's key.
  for (const signer of (process.env.DBCRATE_TRUST ?? '').split(',').filter(Boolean)) {
    execFileSync('gpg', ['--homedir', home, '--batch', '--import', signer], { stdio: 'pipe' });
  }
  return home;
}

/** gpg --decrypt | zstd -d of one stored object, without dbcrate. */
export function openWithGpg(home: string, file: string): Buffer {
  const r = spawnSync(
    'bash',
    [
      '-o',
      'pipefail',
      '-c',
      `gpg --homedir "$GH" --batch --quiet --pinentry-mode loopback --passphrase-fd 3 --decrypt "$F" 3<<<"$PP" | zstd -d -q -c`,
    ],
    { env: { ...process.env, GH: home, F: file, PP: PASSPHRASE }, maxBuffer: 64 * 1024 * 1024 },
  );
  if (r.status !== 0)
    throw new Error(`gpg | zstd -d failed for ${file} (exit ${r.status}): ${r.stderr.toString()}`);
  return r.stdout;
}

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Table names present in checksums() output. */
export function tableNames(sums: unknown[]): string[] {
  return (sums as Array<{ schema: string; table: string }>).map((t) => `${t.schema}.${t.table}`);
}

/** Plain files under a directory (relative paths), [] when it does not exist. */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(join(d, e.name), `${rel}${e.name}/`);
      else out.push(`${rel}${e.name}`);
    }
  };
  walk(dir, '');
  return out.sort();
}

/** Write load used by the specs: updates, inserts, a switch of WAL segment now and then. */
export async function workloadStep(pg: PgCluster, db: string, step: number, opts: { doomed?: boolean } = {}) {
  await pg.psql(
    `BEGIN;
     UPDATE accounts SET balance = balance + ${step} WHERE id % 7 = ${step % 7};
     INSERT INTO events (kind, at_step, payload)
       SELECT 'step', ${step}, jsonb_build_object('i', i, 'h', md5(i::text || ':${step}')) FROM generate_series(1, 3000) i;
     UPDATE public.customers SET balance = balance + 1 WHERE id % 13 = ${step % 13};
     ${opts.doomed === false ? '' : `UPDATE doomed SET note = note || '${step}' WHERE id % 11 = ${step % 11};`}
     COMMIT;`,
    db,
  );
}

export const WORKLOAD_SCHEMA = `
  CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12, 2) NOT NULL);
  CREATE TABLE events (id bigserial PRIMARY KEY, kind text NOT NULL, at_step int NOT NULL, payload jsonb);
  CREATE TABLE doomed (id int PRIMARY KEY, note text NOT NULL);
  INSERT INTO accounts SELECT i, 'owner ' || i, i * 10 FROM generate_series(1, 5000) i;
  INSERT INTO doomed SELECT i, md5(i::text) FROM generate_series(1, 2000) i;
`;

/** One database in `dbcrate windows --json` output (libs/pitr/src/windows.ts DatabaseWindows). */
export interface WindowsDb {
  databaseId: string;
  timelines: Array<{
    timeline: number;
    from: { lsn: string; time: string; backupId: string };
    to: { lsn: string; time?: string; walFile?: string };
    gaps: Array<{ timeline: number; firstMissing: string; missing: number; resumesAt: string }>;
  }>;
  unreachable?: number[];
  conflicts?: string[];
}

/** The databases of `windows --json` (an array, or { databases: [...] }, or one object). */
export function windowsDbs(stdout: string): WindowsDb[] {
  const doc = JSON.parse(stdout) as unknown;
  if (Array.isArray(doc)) return doc as WindowsDb[];
  const o = doc as { databases?: WindowsDb[] };
  return o.databases ?? [doc as WindowsDb];
}

/** Every element of every "gaps" array anywhere in a JSON document. */
export function allGaps(doc: unknown): unknown[] {
  if (Array.isArray(doc)) return doc.flatMap(allGaps);
  if (doc && typeof doc === 'object') {
    return Object.entries(doc).flatMap(([k, v]) =>
      k === 'gaps' && Array.isArray(v) ? [...v, ...v.flatMap(allGaps)] : allGaps(v),
    );
  }
  return [];
}

/** An LSN ("0/3000060") as a number, for comparisons. */
export function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

/** The timeline a recovery promoted now gets: one past the newest timeline in the archive. */
export function nextTimeline(env: PitrEnv, databaseId: string): number {
  const tlis = walObjects(env.destDir, databaseId).map((o) => parseInt(o.walName.slice(0, 8), 16));
  return Math.max(1, ...tlis) + 1;
}
