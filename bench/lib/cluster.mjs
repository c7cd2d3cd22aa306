// A throwaway PostgreSQL cluster: initdb as the postgres OS user in a temp directory,
// trust auth, 127.0.0.1 on a free port. Stopped synchronously so it can be torn down from
// any exit path (error, ^C, SIGTERM).
import { execFile, spawnSync } from 'node:child_process';
import { chownSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

function readText(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

export const PG_BIN = process.env.BENCH_PG_BIN ?? '/usr/lib/postgresql/15/bin';
export const pgTool = (name) => join(PG_BIN, name);

function postgresIds() {
  const id = (flag) => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim());
  return { uid: id('-u'), gid: id('-g') };
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** argv to run as the postgres OS user when we are root (initdb/postgres refuse root). */
const asPostgres = (argv) => (process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', ...argv] : argv);

async function run(argv, opts = {}) {
  const [cmd, ...args] = argv;
  try {
    return await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024, ...opts });
  } catch (e) {
    const what = argv.join(' ').replace(/\s+/g, ' ').slice(0, 300);
    const err = new Error(`${what} failed: ${(e.stderr || e.message || '').toString().trim().slice(-2000)}`);
    err.stderr = e.stderr;
    throw err;
  }
}

export class Cluster {
  constructor(root) {
    this.root = root; // owned by postgres
    this.data = join(root, 'data');
    this.log = join(root, 'postgres.log');
    this.host = '127.0.0.1';
    this.user = 'postgres';
    this.started = false;
  }

  /** libpq conninfo for the peers (pg_dump, pg_restore, psql). */
  conninfo(db) {
    return `host=${this.host} port=${this.port} user=${this.user} dbname=${db}`;
  }

  /** URL for dbcrate. */
  url(db) {
    return `postgres://${this.user}@${this.host}:${this.port}/${db}`;
  }

  async start() {
    mkdirSync(this.root, { recursive: true });
    if (process.getuid?.() === 0) {
      const { uid, gid } = postgresIds();
      chownSync(this.root, uid, gid);
    }
    await run(
      asPostgres([
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
      ]),
    );
    this.port = await freePort();
    await run(
      asPostgres([
        pgTool('pg_ctl'),
        '-D',
        this.data,
        '-l',
        this.log,
        '-w',
        '-t',
        '120',
        '-o',
        `-c port=${this.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${this.root}`,
        'start',
      ]),
    );
    this.started = true;
  }

  /** fsync=off while loading; back to the default (on) before anything is measured. */
  async setLoading(on) {
    await this.psql('postgres', on ? 'ALTER SYSTEM SET fsync = off' : 'ALTER SYSTEM RESET fsync');
    await this.psql('postgres', 'SELECT pg_reload_conf()');
    if (!on) await this.psql('postgres', 'CHECKPOINT');
  }

  async psql(db, sql) {
    const { stdout } = await run(
      [pgTool('psql'), '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', this.conninfo(db), '-c', sql],
      {
        env: cleanPgEnv(),
      },
    );
    return stdout.trim();
  }

  async createdb(name) {
    await this.psql('postgres', `CREATE DATABASE "${name}" TEMPLATE template0`);
  }

  async dropdb(name) {
    await this.psql('postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  }

  async dbSize(name) {
    return Number(await this.psql('postgres', `SELECT pg_database_size('${name}')`));
  }

  /**
   * CPU seconds used so far by the whole server (postmaster, its live children, and the
   * children it has reaped, e.g. the backend that served a pg_dump). The difference of two
   * readings is the server-side CPU of whatever ran in between.
   */
  cpuSeconds() {
    if (!this.postmasterPid) {
      const pid = Number((readText(join(this.data, 'postmaster.pid')) ?? '').split('\n')[0]);
      if (!pid) return NaN;
      this.postmasterPid = pid;
    }
    const pm = this.postmasterPid;
    const kids = (readText(`/proc/${pm}/task/${pm}/children`) ?? '').trim().split(/\s+/).filter(Boolean);
    let ticks = 0;
    for (const pid of [pm, ...kids]) {
      const st = readText(`/proc/${pid}/stat`);
      if (!st) continue;
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    }
    return ticks / CLK_TCK;
  }

  /** Synchronous, idempotent: usable from exit and signal handlers. */
  stopSync() {
    if (!this.started) return;
    this.started = false;
    const [cmd, ...args] = asPostgres([pgTool('pg_ctl'), '-D', this.data, '-m', 'immediate', '-w', 'stop']);
    spawnSync(cmd, args, { stdio: 'ignore' });
  }
}

/** The environment without PG* variables (PGHOST & co. in the caller's shell must not redirect the bench). */
export function cleanPgEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('PG') || k.startsWith('DBCRATE_')) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

export { run };
