/**
 * Helpers for point-in-time-recovery tests: run the CLI as the `postgres` OS user (which
 * is who runs archive_command / restore_command), attach to a cluster that `dbcrate
 * recover --start` brought up, wait until PostgreSQL has archived a segment, stop a
 * cluster by its data directory.
 *
 *   const srv = attachCluster({ dataDir, port, superuser: pg.superuser, password: pg.password });
 *   await waitArchived(srv);            // pg_switch_wal() and wait for the archiver
 *   await srv.stop();                   // pg_ctl stop -m immediate, as postgres
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from 'pg';
import { CLI_ENTRY, transcript, type CliResult } from './cli.harness';
import type { PgCluster } from './pg-cluster.harness';

export interface OsUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

let cachedPostgres: OsUser | undefined;

/** The `postgres` OS user PostgreSQL runs as (tests run as root). */
export function postgresOsUser(): OsUser {
  if (cachedPostgres) return cachedPostgres;
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('no postgres OS user in /etc/passwd');
  const f = line.split(':');
  cachedPostgres = { name: 'postgres', uid: Number(f[2]), gid: Number(f[3]), home: f[5] };
  return cachedPostgres;
}

const isRoot = (): boolean => process.getuid?.() === 0;

/** chown to postgres (when root) and chmod; for key files, config files and destinations. */
export function giveToPostgres(p: string, mode?: number): void {
  if (isRoot()) {
    const { uid, gid } = postgresOsUser();
    fs.chownSync(p, uid, gid);
  }
  if (mode !== undefined) fs.chmodSync(p, mode);
}

/** mkdtemp owned by postgres, mode 0700. */
export function postgresTempDir(prefix: string, parent = '/tmp'): string {
  const dir = fs.mkdtempSync(path.join(parent, prefix));
  giveToPostgres(dir, 0o700);
  return dir;
}

export interface CliAsOptions {
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  cwd?: string;
  input?: string;
  /** Run as this OS user (default postgres when the test runs as root, else the current user). */
  asPostgres?: boolean;
}

function spawnOptions(opts: CliAsOptions) {
  const asPg = (opts.asPostgres ?? true) && isRoot();
  const u = asPg ? postgresOsUser() : undefined;
  return {
    env: {
      ...process.env,
      DBCRATE_LOG_LEVEL: 'info',
      ...(u ? { HOME: u.home, USER: u.name, LOGNAME: u.name } : {}),
      ...opts.env,
    },
    cwd: opts.cwd ?? (u ? '/tmp' : undefined),
    ...(u ? { uid: u.uid, gid: u.gid } : {}),
  };
}

/**
 * `node bin/dbcrate.js …` as the postgres OS user (libuv drops root's groups), captured
 * like runCli and added to `transcript`. Resolves when the process exits: a command that
 * starts a server may leave its stdout/stderr open in the daemon, so `close` is awaited
 * for at most 2 s after `exit` (`pipesHeldOpen` tells when that happened).
 */
export function runCliAs(
  args: string[],
  opts: CliAsOptions = {},
): Promise<CliResult & { pipesHeldOpen: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_ENTRY, ...args], {
      ...spawnOptions(opts),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 240_000);
    child.on('error', reject);
    let closed = false;
    child.on('close', () => (closed = true));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const finish = (pipesHeldOpen: boolean) => {
        if (pipesHeldOpen) {
          child.stdout.destroy();
          child.stderr.destroy();
        }
        transcript.push(`${stdout}\n${stderr}`);
        resolve({ code, signal, stdout, stderr, pipesHeldOpen });
      };
      if (closed) return finish(false);
      const t = setTimeout(() => finish(true), 2000);
      child.once('close', () => {
        clearTimeout(t);
        finish(false);
      });
    });
  });
}

export interface CliProcess {
  child: ChildProcess;
  pid: number;
  /** stdout + stderr so far. */
  output(): string;
  /** Resolves with the exit code/signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Send a signal (default SIGTERM) and wait for the exit (SIGKILL after 5 s); safe to call twice. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** A long-running CLI command (e.g. `dbcrate agent`) as postgres; its output goes to `transcript` at exit. */
export function spawnCliAs(args: string[], opts: CliAsOptions = {}): CliProcess {
  const child = spawn(process.execPath, [CLI_ENTRY, ...args], {
    ...spawnOptions(opts),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => {
      transcript.push(out);
      resolve({ code, signal });
    });
    child.on('error', () => resolve({ code: null, signal: null }));
  });
  return {
    child,
    pid: child.pid ?? 0,
    output: () => out,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      let timer: NodeJS.Timeout | undefined;
      const killed = await Promise.race([
        exited.then(() => true),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 5000))),
      ]);
      clearTimeout(timer);
      if (!killed) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** Last `bytes` of the newest server log we can find for a data directory. */
export function serverLogTail(dataDir: string, logFile?: string, bytes = 4000): string {
  const candidates: string[] = [];
  if (logFile) candidates.push(logFile);
  for (const d of [path.join(dataDir, 'log'), path.join(dataDir, 'pg_log'), dataDir, path.dirname(dataDir)]) {
    try {
      for (const n of fs.readdirSync(d))
        if (/\.log$|^postgresql-.*\.(log|csv)$/.test(n)) candidates.push(path.join(d, n));
    } catch {
      // not there
    }
  }
  const existing = candidates
    .filter((f) => fs.existsSync(f) && fs.statSync(f).isFile())
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  if (existing.length === 0) return `(no server log found for ${dataDir})`;
  const text = fs.readFileSync(existing[0], 'utf8');
  return `${existing[0]}:\n${text.slice(-bytes)}`;
}

export interface PitrServer {
  dataDir: string;
  port: number;
  binDir: string;
  logFile?: string;
  url(dbname: string): string;
  /** One query on a fresh connection (simple protocol: several statements allowed). */
  query<T extends Record<string, unknown> = Record<string, unknown>>(sql: string, db?: string): Promise<T[]>;
  logTail(bytes?: number): string;
  stop(): Promise<void>;
}

async function queryOnce<T>(url: string, sql: string): Promise<T[]> {
  const c = new Client({ connectionString: url, ssl: false });
  c.on('error', () => undefined);
  await c.connect();
  try {
    const r = await c.query(sql);
    const last = Array.isArray(r) ? r[r.length - 1] : r;
    return (last?.rows ?? []) as T[];
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Stop a cluster by its data directory: pg_ctl stop -m immediate as postgres, SIGQUIT as fallback. */
export function stopDataDir(dataDir: string, binDir = '/usr/lib/postgresql/15/bin'): void {
  if (!fs.existsSync(path.join(dataDir, 'postmaster.pid'))) return;
  const pgCtl = path.join(binDir, 'pg_ctl');
  const args = ['stop', '-D', dataDir, '-m', 'immediate', '-w', '-t', '30'];
  try {
    if (isRoot()) execFileSync('runuser', ['-u', 'postgres', '--', pgCtl, ...args], { stdio: 'pipe' });
    else execFileSync(pgCtl, args, { stdio: 'pipe' });
  } catch {
    try {
      const pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (pid > 0) process.kill(pid, 'SIGQUIT');
    } catch {
      // not running
    }
  }
}

const attached = new Set<string>();
let exitHook = false;

/**
 * A running server we did not start ourselves (e.g. `dbcrate recover --start --port N`),
 * reachable on 127.0.0.1:port with the source cluster's superuser and password.
 * stop() stops it (immediate) and, unless keepDir, removes the data directory; a
 * process exit stops it too.
 */
export function attachCluster(o: {
  dataDir: string;
  port: number;
  superuser: string;
  password: string;
  binDir?: string;
  logFile?: string;
  keepDir?: boolean;
}): PitrServer {
  const binDir = o.binDir ?? '/usr/lib/postgresql/15/bin';
  const url = (db: string) =>
    `postgres://${o.superuser}:${encodeURIComponent(o.password)}@127.0.0.1:${o.port}/${encodeURIComponent(db)}`;
  attached.add(o.dataDir);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => attached.forEach((d) => stopDataDir(d)));
  }
  return {
    dataDir: o.dataDir,
    port: o.port,
    binDir,
    logFile: o.logFile,
    url,
    query: (sql, db = 'postgres') => queryOnce(url(db), sql),
    logTail: (bytes) => serverLogTail(o.dataDir, o.logFile, bytes),
    async stop() {
      attached.delete(o.dataDir);
      stopDataDir(o.dataDir, binDir);
      if (!o.keepDir) fs.rmSync(o.dataDir, { recursive: true, force: true });
    },
  };
}

/** The harness cluster seen as a PitrServer (stop() is the harness's). */
export function pitrServerOf(pg: PgCluster): PitrServer {
  return {
    dataDir: pg.dataDir,
    port: pg.port,
    binDir: pg.binDir,
    logFile: pg.logFile,
    url: pg.url,
    query: (sql, db = 'postgres') => queryOnce(pg.url(db), sql),
    logTail: (bytes) => serverLogTail(pg.dataDir, pg.logFile, bytes),
    stop: pg.stop,
  };
}

export interface ArchiverStats {
  archived_count: number;
  last_archived_wal: string | null;
  failed_count: number;
  last_failed_wal: string | null;
}

export async function archiverStats(srv: PitrServer): Promise<ArchiverStats> {
  const [r] = await srv.query<Record<string, unknown>>(
    `SELECT archived_count, last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver`,
  );
  return {
    archived_count: Number(r.archived_count),
    last_archived_wal: (r.last_archived_wal as string | null) ?? null,
    failed_count: Number(r.failed_count),
    last_failed_wal: (r.last_failed_wal as string | null) ?? null,
  };
}

/** Names of the WAL files waiting to be archived (pg_wal/archive_status/*.ready), sorted. */
export function readyFiles(dataDir: string): string[] {
  try {
    return fs
      .readdirSync(path.join(dataDir, 'pg_wal', 'archive_status'))
      .filter((n) => n.endsWith('.ready'))
      .map((n) => n.slice(0, -'.ready'.length))
      .sort();
  } catch {
    return [];
  }
}

const SEGMENT = /^[0-9A-F]{24}$/;

/**
 * Make the current WAL segment complete (pg_switch_wal()) and
 * wait until PostgreSQL has archived it and everything before it: no `.ready` file left
 * for a segment up to it, and pg_stat_archiver says it got that far. Returns the segment
 * name. Fails after timeoutMs with the archiver state and the server log tail.
 */
export async function waitArchived(srv: PitrServer, opts: { timeoutMs?: number } = {}): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  // The segment holding the byte before the switch's end: the one just completed (or,
  // when nothing was written since the last switch, the last complete one).
  const [{ seg }] = await srv.query<{ seg: string }>(`SELECT pg_walfile_name(pg_switch_wal()) AS seg`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const stats = await archiverStats(srv);
    const pending = readyFiles(srv.dataDir).filter(
      (n) => !SEGMENT.test(n.slice(0, 24)) || n.slice(0, 24) <= seg,
    );
    const last = stats.last_archived_wal;
    const reached =
      fs.existsSync(path.join(srv.dataDir, 'pg_wal', 'archive_status', `${seg}.done`)) ||
      (last !== null && SEGMENT.test(last.slice(0, 24)) && last.slice(0, 24) >= seg);
    if (reached && pending.length === 0) return seg;
    if (Date.now() > deadline) {
      throw new Error(
        `WAL segment ${seg} was not archived within ${timeoutMs / 1000} s\n` +
          `pg_stat_archiver: ${JSON.stringify(stats)}\n` +
          `still .ready: ${pending.join(', ') || '(none)'}\n` +
          `--- server log tail ---\n${srv.logTail()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
