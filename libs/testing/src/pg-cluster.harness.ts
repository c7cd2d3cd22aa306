/**
 * Throwaway PostgreSQL clusters for integration tests.
 *
 * Usage (stop() must run even when a test fails, so always in afterAll):
 *
 *   let pg: PgCluster;
 *   beforeAll(async () => { pg = await startPgCluster(); }, 120_000);
 *   afterAll(async () => { await pg?.stop(); });
 *
 * Clusters left behind by a killed test run are stopped by the next startPgCluster();
 * on normal process exit they are killed as well (best effort).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { staleHarnessDirs } from './stale-dirs';
import { freePort } from './ports';

const execFileP = promisify(execFile);

export interface PgClusterOptions {
  /** postgresql.conf settings, applied after the harness defaults (e.g. { archive_mode: 'on' }). */
  settings?: Record<string, string | number | boolean>;
  /** Password of the `dbcrate_test` superuser; random by default. */
  password?: string;
  /** PostgreSQL major whose server binaries to use (default 15). */
  major?: number;
}

export interface PgCluster {
  host: string;
  port: number;
  /** Temporary directory holding data/, the socket and the server log; removed by stop(). */
  baseDir: string;
  dataDir: string;
  socketDir: string;
  logFile: string;
  binDir: string;
  superuser: string;
  password: string;
  /** URL of the `postgres` database as the superuser, with the password. */
  superuserUrl: string;
  /** URL of `dbname` as the superuser, with the password (over TCP, scram-sha-256). */
  url(dbname: string): string;
  /** CREATE DATABASE; returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Run SQL through psql (ON_ERROR_STOP, unaligned, tuples only); returns stdout without the final newline. */
  psql(sql: string, db?: string): Promise<string>;
  /** Stop immediately and delete everything; safe to call twice. */
  stop(): Promise<void>;
}

const SUPERUSER = 'dbcrate_test';
const OWNER_FILE = 'dbcrate-owner.pid';
const PREFIX = 'dbcrate-pg-';
const live = new Map<string, { dataDir: string; baseDir: string }>();
let exitHookInstalled = false;

function postgresIds(): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  return { uid, gid };
}

/** initdb and postgres refuse to run as root: run them as the postgres OS user then. */
function asServerUser(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

async function run(
  cmd: string,
  args: string[],
  opts: { input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      if (code === 0) resolve(stdout);
      else
        reject(
          new Error(
            `${path.basename(cmd)} ${args.slice(0, 4).join(' ')}… exited ${code}:\n${stderr || stdout}`,
          ),
        );
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

function quoteConf(v: string | number | boolean): string {
  return `'${String(v).replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function killCluster(dataDir: string, signal: NodeJS.Signals): void {
  try {
    const pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (pid > 0) process.kill(pid, signal);
  } catch {
    // not running
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous only: SIGQUIT is PostgreSQL's immediate shutdown, so the port is freed.
  process.on('exit', () => {
    for (const { dataDir, baseDir } of live.values()) {
      killCluster(dataDir, 'SIGQUIT');
      try {
        fs.rmSync(baseDir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
  });
}

/** Stop clusters whose test process died without cleaning up (SIGKILL, crash). */
export function reapStaleClusters(tmp = os.tmpdir()): number {
  const stale = staleHarnessDirs(PREFIX, OWNER_FILE, tmp);
  for (const baseDir of stale) {
    killCluster(path.join(baseDir, 'data'), 'SIGQUIT');
    fs.rmSync(baseDir, { recursive: true, force: true });
  }
  return stale.length;
}

/** initdb + start a private cluster on 127.0.0.1:<free port>; see the file comment for cleanup. */
export async function startPgCluster(opts: PgClusterOptions = {}): Promise<PgCluster> {
  reapStaleClusters();
  installExitHook();
  const major = opts.major ?? 15;
  const binDir = `/usr/lib/postgresql/${major}/bin`;
  const password = opts.password ?? randomBytes(18).toString('base64url');
  const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), PREFIX));
  const dataDir = path.join(baseDir, 'data');
  const socketDir = path.join(baseDir, 'sock');
  const logFile = path.join(baseDir, 'server.log');
  fs.writeFileSync(path.join(baseDir, OWNER_FILE), String(process.pid));
  fs.mkdirSync(socketDir);
  if (process.getuid?.() === 0) {
    const { uid, gid } = postgresIds();
    for (const p of [baseDir, socketDir]) fs.chownSync(p, uid, gid);
    fs.chmodSync(baseDir, 0o755); // root (the test) reads the log; postgres owns the rest
  }
  live.set(baseDir, { dataDir, baseDir });

  const stop = async () => {
    if (!live.has(baseDir)) return;
    live.delete(baseDir);
    try {
      const [cmd, args] = asServerUser(path.join(binDir, 'pg_ctl'), [
        'stop',
        '-D',
        dataDir,
        '-m',
        'immediate',
        '-w',
        '-t',
        '30',
      ]);
      await execFileP(cmd, args);
    } catch {
      killCluster(dataDir, 'SIGQUIT');
    }
    fs.rmSync(baseDir, { recursive: true, force: true });
  };

  try {
    {
      const [cmd, args] = asServerUser(path.join(binDir, 'initdb'), [
        '-D',
        dataDir,
        '--username=postgres',
        '--auth-local=trust',
        '--auth-host=scram-sha-256',
        '--encoding=UTF8',
        '--locale=C.UTF-8',
        '--no-sync',
      ]);
      await run(cmd, args);
    }
    const base: Record<string, string | number | boolean> = {
      listen_addresses: '127.0.0.1',
      unix_socket_directories: socketDir,
      // Speed over durability: these clusters live for one test file.
      fsync: 'off',
      synchronous_commit: 'off',
      shared_buffers: '32MB',
      max_connections: 40,
      password_encryption: 'scram-sha-256',
    };
    const settings = { ...base, ...(opts.settings ?? {}) };

    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      const conf = Object.entries({ ...settings, port })
        .map(([k, v]) => `${k} = ${quoteConf(v)}`)
        .join('\n');
      fs.writeFileSync(path.join(dataDir, 'postgresql.auto.conf'), `# dbcrate test harness\n${conf}\n`);
      const [cmd, args] = asServerUser(path.join(binDir, 'pg_ctl'), [
        'start',
        '-D',
        dataDir,
        '-l',
        logFile,
        '-w',
        '-t',
        '60',
      ]);
      try {
        await run(cmd, args);
        break;
      } catch (e) {
        const log = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '';
        // Someone took the port between probing and binding: try another one.
        if (attempt < 4 && /could not (bind|create listen socket)|Address already in use/i.test(log))
          continue;
        throw new Error(`${(e as Error).message}\n--- server log ---\n${log.slice(-4000)}`, { cause: e });
      }
    }
    if (process.getuid?.() === 0) {
      const { uid, gid } = postgresIds();
      fs.chownSync(path.join(dataDir, 'postgresql.auto.conf'), uid, gid);
    }

    // The superuser is created over the trusted socket; everything else uses TCP + password.
    const lit = password.replace(/'/g, "''");
    await run(
      path.join(binDir, 'psql'),
      [
        '-X',
        '-q',
        '-v',
        'ON_ERROR_STOP=1',
        '-h',
        socketDir,
        '-p',
        String(port),
        '-U',
        'postgres',
        '-d',
        'postgres',
      ],
      {
        input: `CREATE ROLE ${SUPERUSER} LOGIN SUPERUSER REPLICATION PASSWORD '${lit}';\n`,
      },
    );

    const host = '127.0.0.1';
    const url = (dbname: string) =>
      `postgres://${SUPERUSER}:${encodeURIComponent(password)}@${host}:${port}/${encodeURIComponent(dbname)}`;
    const psql = async (sql: string, db = 'postgres') => {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        PGPASSWORD: password,
        PGSSLMODE: 'disable',
        PGAPPNAME: 'dbcrate-test',
      };
      delete env.PGSERVICE;
      delete env.PGOPTIONS;
      const out = await run(
        path.join(binDir, 'psql'),
        [
          '-X',
          '-q',
          '-A',
          '-t',
          '-v',
          'ON_ERROR_STOP=1',
          '-h',
          host,
          '-p',
          String(port),
          '-U',
          SUPERUSER,
          '-d',
          db,
          '-f',
          '-',
        ],
        { input: sql, env },
      );
      return out.replace(/\n$/, '');
    };
    return {
      host,
      port,
      baseDir,
      dataDir,
      socketDir,
      logFile,
      binDir,
      superuser: SUPERUSER,
      password,
      superuserUrl: url('postgres'),
      url,
      createDatabase: async (name: string) => {
        await psql(`CREATE DATABASE "${name.replace(/"/g, '""')}";`);
        return url(name);
      },
      psql,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

export interface SampleDatabaseOptions {
  /** Rows in the main tables (customers; orders has 3× as many). Default 1000. */
  rows?: number;
  /** Changes the generated content (same seed → same data). Default 1. */
  seed?: number;
}

export interface SampleDatabaseInfo {
  /** schema.table of every table created. */
  tables: string[];
  largeObjects: number;
}

/**
 * Fill a database with varied types and objects for round-trip tests: ints, text (with
 * quotes, backslashes, newlines, non-ASCII), numeric, float, bool, arrays, jsonb, bytea
 * (incl. a TOASTed ~1 MB value), date/time types, an enum, a second schema, a view, a
 * sequence, indexes, a FK, a function, a trigger, a materialized view and a large object.
 * Content is deterministic (md5 of row number and seed), generated server-side so large
 * `rows` stay fast.
 */
export async function sampleDatabase(
  url: string,
  opts: SampleDatabaseOptions = {},
): Promise<SampleDatabaseInfo> {
  const rows = Math.max(1, Math.floor(opts.rows ?? 1000));
  const seed = Math.floor(opts.seed ?? 1);
  const client = new Client({ connectionString: url, ssl: false });
  await client.connect();
  try {
    await client.query(`SET TimeZone = 'UTC'`);
    await client.query(`
      CREATE SCHEMA shop;
      CREATE TYPE shop.status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
      CREATE SEQUENCE public.invoice_no START 1000 INCREMENT 7;

      CREATE TABLE public.customers (
        id integer PRIMARY KEY,
        name text NOT NULL,
        email text UNIQUE,
        balance numeric(14, 2) NOT NULL DEFAULT 0,
        score double precision,
        active boolean NOT NULL,
        tags text[],
        born date,
        created_at timestamptz NOT NULL,
        note text
      );
      CREATE TABLE shop.orders (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        customer_id integer NOT NULL REFERENCES public.customers (id),
        status shop.status NOT NULL,
        placed_at timestamp NOT NULL,
        total numeric NOT NULL,
        details jsonb,
        invoice bigint NOT NULL DEFAULT nextval('public.invoice_no'),
        delivery interval,
        uid uuid
      );
      CREATE INDEX orders_placed_at ON shop.orders (placed_at);
      CREATE INDEX orders_details ON shop.orders USING gin (details);
      CREATE TABLE public.blobs (
        id integer PRIMARY KEY,
        data bytea NOT NULL,
        sha256 text NOT NULL
      );
      CREATE TABLE public.audit (
        id bigserial PRIMARY KEY,
        customer_id integer,
        changed_at timestamptz NOT NULL DEFAULT '2000-01-01 00:00:00+00'
      );
      CREATE FUNCTION public.customer_total(cid integer) RETURNS numeric LANGUAGE sql STABLE AS
        $$ SELECT coalesce(sum(total), 0) FROM shop.orders WHERE customer_id = cid $$;
      CREATE FUNCTION public.audit_customer() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN INSERT INTO public.audit (customer_id) VALUES (NEW.id); RETURN NEW; END $$;
      CREATE TRIGGER customers_audit AFTER UPDATE ON public.customers
        FOR EACH ROW EXECUTE FUNCTION public.audit_customer();
    `);
    await client.query(
      `INSERT INTO public.customers
       SELECT i,
              'Customer ' || i || CASE i % 5 WHEN 0 THEN ' O''Brien' WHEN 1 THEN E' back\\\\slash' WHEN 2 THEN E'\\nnew line\\t'
                                            WHEN 3 THEN ' Zoë Ångström 日本' ELSE '' END,
              CASE WHEN i % 17 = 0 THEN NULL ELSE 'c' || i || '@' || substr(h, 1, 8) || '.example' END,
              round((('x' || substr(h, 1, 8))::bit(32)::int % 10000000) / 100.0, 2),
              CASE WHEN i % 11 = 0 THEN NULL ELSE (('x' || substr(h, 9, 8))::bit(32)::int) / 7.0::float8 END,
              i % 3 <> 0,
              CASE WHEN i % 4 = 0 THEN NULL ELSE ARRAY['t' || (i % 7), substr(h, 17, 4)] END,
              date '1950-01-01' + (('x' || substr(h, 21, 4))::bit(16)::int % 20000),
              timestamptz '2020-01-01 00:00:00+00' + (('x' || substr(h, 25, 7))::bit(28)::int) * interval '1 second',
              CASE WHEN i % 9 = 0 THEN repeat(h, 3) END
         FROM (SELECT i, md5(i::text || ':' || $2::text) AS h FROM generate_series(1, $1::int) i) g`,
      [rows, seed],
    );
    await client.query(
      `INSERT INTO shop.orders (customer_id, status, placed_at, total, details, delivery, uid)
       SELECT 1 + (('x' || substr(h, 1, 8))::bit(32)::int & 2147483647) % $1::int,
              (ARRAY['new', 'paid', 'shipped', 'cancelled']::shop.status[])[1 + i % 4],
              timestamp '2021-06-01 12:00:00' + i * interval '37 minutes 13.5 seconds',
              round((('x' || substr(h, 9, 6))::bit(24)::int) / 1000.0, 3),
              CASE WHEN i % 13 = 0 THEN NULL
                   ELSE jsonb_build_object('sku', substr(h, 1, 6), 'qty', i % 9, 'gift', i % 2 = 0,
                                           'lines', jsonb_build_array(i, substr(h, 7, 3), NULL), 'note', 'ü"q\\') END,
              CASE WHEN i % 5 = 0 THEN NULL ELSE make_interval(days => i % 30, hours => i % 24) END,
              (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-8' || substr(h, 18, 3) || '-' || substr(h, 21, 12))::uuid
         FROM (SELECT i, md5('o' || i::text || ':' || $2::text) AS h FROM generate_series(1, $1::int * 3) i) g`,
      [rows, seed],
    );
    const blobs = Math.max(2, Math.min(rows, 50));
    await client.query(
      `INSERT INTO public.blobs
       SELECT i, d, encode(sha256(d), 'hex')
         FROM (SELECT i, CASE WHEN i = 1
                         -- one value far above the TOAST threshold, poorly compressible
                         THEN (SELECT string_agg(decode(md5(j::text || ':' || $2::text), 'hex'), ''::bytea)
                                 FROM generate_series(1, 65536) j)
                         ELSE decode(repeat(md5(i::text || ':' || $2::text), 1 + i % 40), 'hex') END AS d
                 FROM generate_series(1, $1::int) i) g`,
      [blobs, seed],
    );
    await client.query(`
      UPDATE public.customers SET active = NOT active WHERE id % 50 = 0;
      SELECT setval('public.invoice_no', (SELECT max(invoice) FROM shop.orders));
      CREATE VIEW public.customer_totals AS
        SELECT c.id, c.name, count(o.id) AS orders, coalesce(sum(o.total), 0) AS total
          FROM public.customers c LEFT JOIN shop.orders o ON o.customer_id = c.id GROUP BY c.id, c.name;
      CREATE MATERIALIZED VIEW shop.daily AS
        SELECT placed_at::date AS day, count(*) AS n, sum(total) AS total FROM shop.orders GROUP BY 1;
      COMMENT ON TABLE public.customers IS 'sample data for round-trip tests';
    `);
    await client.query(
      `SELECT lo_from_bytea(0, convert_to(repeat('large object ' || $1::text || E'\\n', 4096), 'UTF8'))`,
      [seed],
    );
    await client.query('ANALYZE');
    return { tables: ['public.audit', 'public.blobs', 'public.customers', 'shop.orders'], largeObjects: 1 };
  } finally {
    await client.end();
  }
}
