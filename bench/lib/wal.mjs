// Shared harness of the PITR benchmarks (bench/pitr.mjs): throwaway clusters started with
// archive settings on the postmaster command line, WAL generation, the archive backlog,
// commands run as the postgres OS user, and the tracking that lets every exit path stop
// what was started (clusters, agents, pgBackRest's detached async processes).
//
// Archive settings go on the command line (`pg_ctl -o "-c archive_command=…"`), not into
// postgresql.conf / postgresql.auto.conf: a base backup copies those files, and a restored
// cluster must not start archiving into the benchmark's repositories.
import { execFile, spawn, spawnSync } from 'node:child_process';
import {
  chownSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Cluster, cleanPgEnv, freePort, pgTool } from './cluster.mjs';

const execFileP = promisify(execFile);
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;
export const SEGMENT_BYTES = 16 * 1024 * 1024;

// ---------------------------------------------------------------- the postgres OS user
let ids = null;
/** uid/gid of the postgres OS user (clusters, archive_command, agents and repositories run as it). */
export function pgUser() {
  if (!ids) {
    const id = (flag) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
    ids = { uid: id('-u'), gid: id('-g') };
    if (!Number.isInteger(ids.uid) || !Number.isInteger(ids.gid)) throw new Error('no postgres OS user');
  }
  return ids;
}
const asRoot = () => process.getuid?.() === 0;
/** spawn/execFile options that switch to the postgres user when we are root. */
export const pgSpawnOpts = () => (asRoot() ? pgUser() : {});

/** mkdir -p, owned by postgres. */
export function mkdirPg(dir, mode = 0o755) {
  mkdirSync(dir, { recursive: true, mode });
  if (asRoot()) chownSync(dir, pgUser().uid, pgUser().gid);
}

/** POSIX shell single-quoting. */
export const shq = (s) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${String(s).replace(/'/g, `'\\''`)}'`);

/** Environment for commands run as postgres: no PG* or DBCRATE_* variables from the caller, a HOME it can use. */
export const pgEnv = (home, extra = {}) => cleanPgEnv({ HOME: home, ...extra });

/** execFile as postgres; rejects with the tail of stderr. */
export async function runPg(argv, opts = {}) {
  const [cmd, ...args] = argv;
  try {
    return await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024, ...pgSpawnOpts(), ...opts });
  } catch (e) {
    const what = argv.join(' ').replace(/\s+/g, ' ').slice(0, 300);
    const err = new Error(
      `${what} failed (exit ${e.code ?? e.signal}): ${(e.stderr || e.stdout || e.message || '').toString().trim().slice(-3000)}`,
    );
    err.stderr = e.stderr;
    err.code = e.code;
    throw err;
  }
}

// ---------------------------------------------------------------- tracked background processes
const daemons = new Map(); // pid -> { name }
const dataDirs = new Set(); // every data directory a server may run in

/**
 * Start a long-running process (the dbcrate agent) as postgres in its own process group,
 * stdout+stderr to `logFile`. Returns { pid, child, exited: Promise<{code, signal}> }.
 */
export function startDaemon(name, argv, { env, cwd, logFile }) {
  const fd = openSync(logFile, 'a');
  const child = spawn(argv[0], argv.slice(1), {
    env,
    cwd,
    detached: true,
    stdio: ['ignore', fd, fd],
    ...pgSpawnOpts(),
  });
  closeSync(fd);
  daemons.set(child.pid, { name });
  const exited = new Promise((resolve) => {
    child.once('error', (e) => resolve({ code: null, signal: null, error: e }));
    child.once('exit', (code, signal) => {
      daemons.delete(child.pid);
      resolve({ code, signal });
    });
  });
  return { pid: child.pid, child, exited, name, logFile };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
export async function stopDaemon(d, graceMs = 10000) {
  if (!d || !daemons.has(d.pid)) return d ? d.exited : undefined;
  const kill = (sig) => {
    try {
      process.kill(-d.pid, sig);
    } catch {
      /* gone */
    }
  };
  kill('SIGTERM');
  const t = setTimeout(() => kill('SIGKILL'), graceMs);
  const r = await d.exited;
  clearTimeout(t);
  return r;
}

/** CPU seconds of a live process and its reaped children (utime+stime+cutime+cstime). */
export function procCpuSeconds(pid) {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Pids of processes whose command line contains `marker` (our temp directory), not ourselves. */
export function processesWith(marker) {
  const out = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    let cmd;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (cmd.includes(marker)) out.push({ pid, cmd: cmd.replace(/\0/g, ' ').trim() });
  }
  return out;
}

/** Wait until no process mentions `marker` (pgBackRest's async workers finish their queue), then kill stragglers. */
export async function waitForStrays(marker, timeoutMs = 15000) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (processesWith(marker).length === 0) return [];
    await sleep(100);
  }
  const left = processesWith(marker);
  for (const p of left) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  return left;
}

/** Synchronous: stop every server and daemon we started, kill whatever still runs from `marker`. */
export function killEverythingSync(marker) {
  for (const dir of dataDirs) stopDataDirSync(dir);
  for (const pid of daemons.keys()) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  daemons.clear();
  if (!marker) return;
  for (let i = 0; i < 3; i++) {
    const left = processesWith(marker);
    if (left.length === 0) break;
    for (const p of left) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    spawnSync('sleep', ['0.2']);
  }
}

/** Register a data directory some command may start a server in (dbcrate recover --start). */
export const trackDataDir = (dir) => dataDirs.add(dir);

/** pg_ctl stop -m immediate if a postmaster.pid is there; synchronous, idempotent. */
export function stopDataDirSync(dir) {
  if (!existsSync(join(dir, 'postmaster.pid'))) return;
  const argv = [pgTool('pg_ctl'), '-D', dir, '-m', 'immediate', '-w', '-t', '30', 'stop'];
  const full = asRoot() ? ['runuser', '-u', 'postgres', '--', ...argv] : argv;
  spawnSync(full[0], full.slice(1), { stdio: 'ignore' });
}

/** The postmaster's pid from DIR/postmaster.pid, or null. */
export function postmasterPid(dir) {
  try {
    return Number(readFileSync(join(dir, 'postmaster.pid'), 'utf8').split('\n')[0]) || null;
  } catch {
    return null;
  }
}

/** CPU seconds of a server tree (postmaster, live children, reaped children), as Cluster.cpuSeconds. */
export function serverCpuSeconds(dir) {
  const pm = postmasterPid(dir);
  if (!pm) return NaN;
  let kids = [];
  try {
    kids = readFileSync(`/proc/${pm}/task/${pm}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {
    /* gone */
  }
  return [pm, ...kids].map((p) => procCpuSeconds(p)).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- a cluster with archive settings
/**
 * A throwaway cluster like Cluster (bench/lib/cluster.mjs), started with extra settings on
 * the postmaster command line, and stoppable / restartable with other settings.
 */
export class ArchiveCluster extends Cluster {
  async init() {
    mkdirPg(this.root);
    await runPg([
      pgTool('initdb'),
      '-D',
      this.data,
      '-U',
      'postgres',
      '--auth=trust',
      '--no-sync',
      '-E',
      'UTF8',
      '--locale=C',
    ]);
    dataDirs.add(this.data);
  }

  /** Start with `settings` ({ name: value }) as -c options; the port is kept across restarts. */
  async startWith(settings = {}) {
    this.port ??= await freePort();
    this.settings = settings;
    const opts = [
      `-c port=${this.port}`,
      '-c listen_addresses=127.0.0.1',
      `-c unix_socket_directories=${shq(this.root)}`,
      ...Object.entries(settings).map(([k, v]) => `-c ${shq(`${k}=${v}`)}`),
    ].join(' ');
    // the server (and so archive_command) gets no PG* or DBCRATE_* variables from us, and a HOME it owns
    await runPg([pgTool('pg_ctl'), '-D', this.data, '-l', this.log, '-w', '-t', '300', '-o', opts, 'start'], {
      env: pgEnv(this.root, { LC_ALL: 'C' }),
    });
    this.started = true;
    this.postmasterPid = undefined; // Cluster.cpuSeconds caches it
    dataDirs.add(this.data);
  }

  async start() {
    await this.init();
    await this.startWith(this.settings ?? {});
  }

  async stop(mode = 'fast') {
    if (!this.started) return;
    await runPg([pgTool('pg_ctl'), '-D', this.data, '-m', mode, '-w', '-t', '300', 'stop']);
    this.started = false;
  }

  stopSync() {
    this.started = false;
    stopDataDirSync(this.data);
  }

  /** Number of pg_wal/archive_status/*.ready: segments PostgreSQL still has to archive. */
  backlog() {
    return readyCount(this.data);
  }

  async archiver() {
    const row = await this.psql(
      'postgres',
      "SELECT archived_count || '|' || failed_count || '|' || coalesce(last_archived_wal, '') || '|' || coalesce(last_failed_wal, '') FROM pg_stat_archiver",
    );
    const [archived, failed, lastArchived, lastFailed] = row.split('|');
    return { archived: Number(archived), failed: Number(failed), lastArchived, lastFailed };
  }

  async lsn() {
    return this.psql('postgres', 'SELECT pg_current_wal_lsn()');
  }

  /** Switch to a new segment; resolves once PostgreSQL reports the old one archived. */
  async switchAndWaitArchived(timeoutMs = 300000) {
    const seg = await this.psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_lsn())');
    await this.psql('postgres', 'SELECT pg_switch_wal()');
    const t0 = Date.now();
    for (;;) {
      const a = await this.archiver();
      if (a.lastArchived && a.lastArchived.slice(0, 24) >= seg) return seg;
      if (Date.now() - t0 > timeoutMs) {
        throw new Error(
          `segment ${seg} not archived after ${timeoutMs / 1000} s (last archived ${a.lastArchived || 'none'}, ` +
            `failed ${a.failed}, last failed ${a.lastFailed || 'none'}); see ${this.log}`,
        );
      }
      await sleep(200);
    }
  }

  /** The tail of the server log (for error messages). */
  logTail(lines = 20) {
    try {
      return readFileSync(this.log, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }
}

/** LSN text (X/Y) to a number of bytes. */
export function lsnBytes(lsn) {
  const [hi, lo] = lsn.split('/');
  return parseInt(hi, 16) * 2 ** 32 + parseInt(lo, 16);
}

/** WAL file name (timeline 1 assumed from `tli`) to its segment number, and back. */
export const segNo = (walfile) =>
  parseInt(walfile.slice(8, 16), 16) * 256 + parseInt(walfile.slice(16, 24), 16);
export const walName = (tli, no) =>
  tli.toString(16).toUpperCase().padStart(8, '0') +
  Math.floor(no / 256)
    .toString(16)
    .toUpperCase()
    .padStart(8, '0') +
  (no % 256).toString(16).toUpperCase().padStart(8, '0');

export function readyCount(data) {
  try {
    let n = 0;
    for (const f of readdirSync(join(data, 'pg_wal', 'archive_status'))) if (f.endsWith('.ready')) n++;
    return n;
  } catch {
    return NaN;
  }
}

/**
 * Samples the archive backlog every `everyMs` until stop(): [{ t (s since start), ready }].
 */
export function backlogSampler(data, everyMs = 1000) {
  const t0 = Date.now();
  const samples = [{ t: 0, ready: readyCount(data) }];
  const timer = setInterval(
    () => samples.push({ t: (Date.now() - t0) / 1000, ready: readyCount(data) }),
    everyMs,
  );
  return {
    samples,
    stop() {
      clearInterval(timer);
      samples.push({ t: (Date.now() - t0) / 1000, ready: readyCount(data) });
      return samples;
    },
  };
}

// ---------------------------------------------------------------- WAL generation
// Rows like bench/lib/dataset.mjs's events: ids and timestamps, a small vocabulary, random
// base64 strings and a JSON payload; zstd -3 gets ~2-3x on the WAL they produce.
export const WALGEN_DDL = `CREATE TABLE IF NOT EXISTS walgen (
  id bigint NOT NULL, created_at timestamptz NOT NULL, kind text NOT NULL, session text NOT NULL, payload text NOT NULL)`;
export const walgenInsert = (lo, hi) => `
INSERT INTO walgen
SELECT g,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '997 milliseconds',
       (ARRAY['login','logout','view','click','search','purchase','refund','signup','error','export'])[1 + (g % 10)],
       encode(decode(md5(random()::text), 'hex'), 'base64'),
       '{"path":"/api/v1/' || (ARRAY['orders','items','users','carts','search'])[1 + (g % 5)] ||
         '","ua":"Mozilla/5.0 (X11; Linux x86_64)","ref":"' || substr(md5((g % 1000)::text), 1, 20) ||
         '","token":"' || encode(decode(md5(random()::text) || md5(random()::text), 'hex'), 'base64') ||
         '","status":' || (ARRAY[200,200,200,201,204,301,404,500])[1 + (g % 8)] || '}'
FROM generate_series(${lo}::bigint, ${hi}::bigint) g`;

/**
 * Fill `n` whole WAL segments with INSERTs, starting at a fresh segment. Returns the names
 * of the n segments, in order (all complete, so PostgreSQL has marked them .ready).
 */
export async function fillSegments(cluster, n, log = () => {}) {
  await cluster.psql('postgres', WALGEN_DDL);
  await cluster.psql('postgres', 'SELECT pg_switch_wal()');
  const first = await cluster.psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_lsn())');
  const tli = parseInt(first.slice(0, 8), 16);
  const start = segNo(first);
  let id = 0;
  const batch = 60000; // ~1 segment
  for (;;) {
    const cur = segNo(await cluster.psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_lsn())'));
    if (cur >= start + n) break;
    await cluster.psql('postgres', walgenInsert(id + 1, id + batch));
    id += batch;
    if ((id / batch) % 10 === 0) log(`  WAL: ${cur - start}/${n} segments`);
  }
  return Array.from({ length: n }, (_, i) => walName(tli, start + i));
}

/** Run pgbench as root against the cluster (pgbench is a client; it needs no postgres user). */
export async function pgbench(cluster, args, db = 'postgres') {
  const { stdout, stderr } = await execFileP(
    pgTool('pgbench'),
    [...args, '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.user, db],
    { env: cleanPgEnv(), maxBuffer: 64 * 1024 * 1024 },
  ).catch((e) => {
    throw new Error(`pgbench ${args.join(' ')} failed: ${(e.stderr || e.message).toString().slice(-2000)}`);
  });
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1];
  const txns = /number of transactions actually processed: (\d+)/.exec(stdout)?.[1];
  return { stdout, stderr, tps: tps ? Number(tps) : NaN, transactions: txns ? Number(txns) : NaN };
}

/** Total size in bytes of the files under `dir` (recursively) that satisfy `pred(name)`. */
export function treeBytes(dir, pred = () => true) {
  let total = 0;
  let files = 0;
  const walk = (d) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (pred(e.name, p)) {
        try {
          total += statSync(p).size;
        } catch {
          /* raced */
        }
        files++;
      }
    }
  };
  walk(dir);
  return { bytes: total, files };
}

/** rm -rf, then mkdir owned by postgres. */
export function freshDirPg(dir, mode = 0o755) {
  rmSync(dir, { recursive: true, force: true });
  mkdirPg(dir, mode);
}
