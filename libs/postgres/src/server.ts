import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import type { Client, ClientConfig } from 'pg';
import { DbcrateError, ErrorCodes, logger, redact } from '@dbcrate/core';
import { describeConnInfo, parseConnectionString, type ConnInfo } from './conninfo';

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

export interface ConnectOptions {
  /** Give up connecting after this long (default 10 s). */
  connectTimeoutMs?: number;
  /** Shown in pg_stat_activity; the URL's application_name wins. */
  applicationName?: string;
}

/** Connect with `pg`. Any failure (network, auth, missing database) → E_DB_UNREACHABLE. */
export async function connect(url: string | ConnInfo, opts: ConnectOptions = {}): Promise<Client> {
  const info = typeof url === 'string' ? parseConnectionString(url) : url;
  const attempts = sslAttempts(info);
  let lastError: unknown;
  // Loaded here, not at import: commands that never connect (wal-push, wal-fetch) start faster.
  const pg = await import('pg');
  for (const ssl of attempts) {
    const client = new pg.Client(clientConfig(info, ssl, opts));
    try {
      await client.connect();
      // Without a listener, a server-side disconnect while idle would crash the process;
      // the next query on this client fails with a clear error instead.
      client.on('error', (e: Error) =>
        logger().warn({ err: e, target: describeConnInfo(info) }, 'PostgreSQL connection lost'),
      );
      return client;
    } catch (e) {
      lastError = e;
      await client.end().catch(() => undefined);
      // sslmode=prefer/allow: retry in plain text only when the server has no SSL at all.
      if (!(ssl && /does not support SSL/i.test(errorText(e)))) break;
    }
  }
  throw unreachable(info, lastError);
}

/** libpq's sslmode as a sequence of `pg` ssl settings to try. */
function sslAttempts(info: ConnInfo): Array<false | ConnectionOptions> {
  if (info.socket) return [false]; // libpq never uses SSL over a Unix socket
  const files = readSslFiles(info);
  switch (info.sslmode) {
    case 'disable':
      return [false];
    case 'allow':
    case 'prefer':
      return [{ ...files, rejectUnauthorized: false }, false];
    case 'require':
      // As libpq: encryption only, unless a root certificate is given (then as verify-ca).
      return files.ca ? [verifyCa(files)] : [{ ...files, rejectUnauthorized: false }];
    case 'verify-ca':
      return [verifyCa(files)];
    case 'verify-full':
      // Node rejects an IP address as SNI name; the certificate check still uses the host.
      return [
        { ...files, rejectUnauthorized: true, ...(net.isIP(info.host) ? {} : { servername: info.host }) },
      ];
  }
}

function verifyCa(files: ConnectionOptions): ConnectionOptions {
  return { ...files, rejectUnauthorized: true, checkServerIdentity: () => undefined };
}

function readSslFiles(info: ConnInfo): ConnectionOptions {
  const home = path.join(os.homedir(), '.postgresql');
  const read = (p: string | undefined, fallback: string | undefined, what: string): Buffer | undefined => {
    const file = p ?? (fallback && fs.existsSync(fallback) ? fallback : undefined);
    if (!file || file === 'system') return undefined;
    try {
      return fs.readFileSync(file);
    } catch (e) {
      throw new DbcrateError(ErrorCodes.CONFIG, `Cannot read the ${what} ${file}: ${(e as Error).message}`, {
        hint: 'Fix the path in the connection URL (sslrootcert / sslcert / sslkey).',
      });
    }
  };
  const verifying = info.sslmode === 'verify-ca' || info.sslmode === 'verify-full';
  const opts: ConnectionOptions = {};
  const ca = read(
    info.params.sslrootcert,
    verifying || info.sslmode === 'require' ? path.join(home, 'root.crt') : undefined,
    'SSL root certificate',
  );
  if (ca) opts.ca = ca;
  const cert = read(info.params.sslcert, undefined, 'SSL client certificate');
  if (cert) opts.cert = cert;
  const key = read(info.params.sslkey, undefined, 'SSL client key');
  if (key) opts.key = key;
  return opts;
}

function clientConfig(info: ConnInfo, ssl: false | ConnectionOptions, opts: ConnectOptions): ClientConfig {
  const config: ClientConfig = {
    host: info.hostaddr ?? info.host,
    port: info.port,
    user: info.user,
    database: info.database,
    ssl,
    connectionTimeoutMillis:
      opts.connectTimeoutMs ?? connectTimeoutFromParams(info) ?? DEFAULT_CONNECT_TIMEOUT_MS,
    application_name: info.params.application_name ?? opts.applicationName ?? 'dbcrate',
  };
  if (info.password !== undefined) config.password = info.password;
  if (info.params.options) config.options = info.params.options;
  if (ssl && info.hostaddr && !ssl.servername && !net.isIP(info.host)) ssl.servername = info.host;
  return config;
}

function connectTimeoutFromParams(info: ConnInfo): number | undefined {
  const s = Number(info.params.connect_timeout);
  return Number.isFinite(s) && s > 0 ? Math.max(2, s) * 1000 : undefined;
}

function errorText(e: unknown): string {
  if (e instanceof AggregateError && e.errors.length > 0) return e.errors.map(errorText).join('; ');
  if (e instanceof Error) return e.message || String((e as NodeJS.ErrnoException).code ?? e.name);
  return String(e);
}

function unreachable(info: ConnInfo, e: unknown): DbcrateError {
  const target = describeConnInfo(info);
  const err = e as { code?: string; message?: string };
  const code =
    err?.code ?? (e instanceof AggregateError ? (e.errors[0] as { code?: string })?.code : undefined);
  let reason = errorText(e);
  let hint: string;
  const where = info.socket ? `the socket ${info.host}/.s.PGSQL.${info.port}` : `${info.host}:${info.port}`;
  if (code === 'ECONNREFUSED' || code === 'ENOENT') {
    reason = `connection refused (${reason})`;
    hint = `Check that PostgreSQL is running and listening on ${where} (listen_addresses, port, unix_socket_directories).`;
  } else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    hint = `The host name "${info.host}" does not resolve; check it in the URL.`;
  } else if (code === 'ETIMEDOUT' || /timeout expired|connection timeout/i.test(reason)) {
    reason = `no answer within the connect timeout (${reason})`;
    hint = `Check that ${where} is reachable from this machine (firewall, security group, VPN).`;
  } else if (code === '28P01' || /password must be a (non-empty )?string/i.test(reason)) {
    if (/password must be/i.test(reason)) reason = 'the server asked for a password and none was given';
    hint =
      'Check the user name and password (percent-encode special characters in the URL), or set PGPASSWORD / ~/.pgpass.';
  } else if (code === '28000') {
    hint =
      'The server refused this user/host/database combination; check pg_hba.conf on the server and the user name.';
  } else if (code === '3D000') {
    hint = `Create the database "${info.database}" or fix the database name in the URL.`;
  } else if (code === '53300') {
    hint = 'The server has no free connection slots; retry later or raise max_connections.';
  } else if (code === '57P03') {
    hint = 'The server is starting up, shutting down or in recovery; retry in a moment.';
  } else if (/SSL|certificate|self[- ]signed/i.test(reason)) {
    hint =
      'Check sslmode and the certificates (sslrootcert) in the URL; sslmode=require encrypts without verifying the server.';
  } else {
    hint = `Check the connection URL and that PostgreSQL accepts connections on ${where}.`;
  }
  return new DbcrateError(
    ErrorCodes.DB_UNREACHABLE,
    redact(`Cannot connect to PostgreSQL at ${target}: ${reason}`),
    {
      hint,
      cause: e,
    },
  );
}

export interface ServerInfo {
  /** server_version_num, e.g. 150014. */
  versionNum: number;
  /** Major version: 15 for 15.x; 9.6 for 9.6.x (before PostgreSQL 10 the major had two parts). */
  major: number;
  /** server_version, e.g. "15.14 (Debian 15.14-0+deb12u1)". */
  version: string;
  /** pg_control_system().system_identifier as text; undefined without the privilege to read it. */
  systemIdentifier?: string;
  databaseName: string;
  inRecovery: boolean;
}

export function majorOf(versionNum: number): number {
  const first = Math.floor(versionNum / 10000);
  return versionNum >= 100000 ? first : Number(`${first}.${Math.floor((versionNum % 10000) / 100)}`);
}

/** Server identity for manifests and tool selection. */
export async function serverInfo(client: Client): Promise<ServerInfo> {
  const { rows } = await client.query<{ num: string; ver: string; db: string; rec: boolean; ctl: boolean }>(
    `SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS ver,
            current_database() AS db, pg_is_in_recovery() AS rec,
            has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') AS ctl`,
  );
  const r = rows[0];
  let systemIdentifier: string | undefined;
  // Checked first so that a missing privilege never aborts the caller's transaction.
  if (r.ctl) {
    const id = await client.query<{ id: string }>(
      'SELECT system_identifier::text AS id FROM pg_control_system()',
    );
    systemIdentifier = id.rows[0]?.id;
  }
  const versionNum = Number(r.num);
  return {
    versionNum,
    major: majorOf(versionNum),
    version: r.ver,
    systemIdentifier,
    databaseName: r.db,
    inRecovery: r.rec,
  };
}

/** Schemas that every database has; objects there are not user content. */
const SYSTEM_SCHEMA_SQL = `(n.nspname IN ('pg_catalog', 'information_schema') OR n.nspname LIKE 'pg\\_%')`;

export interface DatabaseContents {
  relations: number;
  functions: number;
  types: number;
  /** User schemas other than `public`. */
  schemas: number;
  /** Extensions other than plpgsql. */
  extensions: number;
  largeObjects: number;
}

/** Counts of user objects, for "target is not empty" decisions and messages. */
export async function databaseContents(client: Client): Promise<DatabaseContents> {
  const user = `NOT ${SYSTEM_SCHEMA_SQL}`;
  const { rows } = await client.query<Record<keyof DatabaseContents, string>>(
    `SELECT
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ${user}) AS relations,
       (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE ${user}) AS functions,
       (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE ${user}) AS types,
       (SELECT count(*) FROM pg_namespace n WHERE ${user} AND n.nspname <> 'public') AS schemas,
       (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql') AS extensions,
       (SELECT count(*) FROM pg_largeobject_metadata) AS "largeObjects"`,
  );
  const r = rows[0];
  return {
    relations: Number(r.relations),
    functions: Number(r.functions),
    types: Number(r.types),
    schemas: Number(r.schemas),
    extensions: Number(r.extensions),
    largeObjects: Number(r.largeObjects),
  };
}

/** True when the database holds no user relations, functions, types, schemas (besides public), extensions (besides plpgsql) or large objects. */
export async function isDatabaseEmpty(client: Client): Promise<boolean> {
  const c = await databaseContents(client);
  return Object.values(c).every((n) => n === 0);
}

/** Operators mark production databases with `ALTER DATABASE x SET dbcrate.production = on`; restores refuse them. */
export async function isProductionTarget(client: Client): Promise<boolean> {
  const { rows } = await client.query<{ v: string | null }>(
    `SELECT current_setting('dbcrate.production', true) AS v`,
  );
  return ['on', 'true', '1', 'yes'].includes((rows[0]?.v ?? '').trim().toLowerCase());
}

export interface TableChecksum {
  schema: string;
  table: string;
  rows: number;
  /** md5 over the rows' text forms in byte order, joined with '|' (md5 of '' for an empty table). */
  md5: string;
}

/**
 * Per-table row count and content hash, to compare a source with its restore. Reads every
 * row (string_agg in memory, max 1 GB per table): for tests and verification of modest
 * databases, not a production-size integrity check.
 */
export async function tableChecksums(client: Client): Promise<TableChecksum[]> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    // Fixed output settings and byte-order sorting, so that two servers (or sessions) with
    // different TimeZone, DateStyle or collation give the same text for the same data.
    await client.query(
      `SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'postgres';
       SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = 'hex'`,
    );
    const { rows: tables } = await client.query<{ schema: string; table: string; ident: string }>(
      `SELECT n.nspname AS schema, c.relname AS table, format('%I.%I', n.nspname, c.relname) AS ident
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND NOT ${SYSTEM_SCHEMA_SQL}
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"`,
    );
    const out: TableChecksum[] = [];
    for (const t of tables) {
      // ONLY: rows of inheritance children / partitions are counted under their own table.
      const { rows } = await client.query<{ n: string; md5: string }>(
        `SELECT count(*) AS n, coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE "C")), md5('')) AS md5
           FROM ONLY ${t.ident} t`,
      );
      out.push({ schema: t.schema, table: t.table, rows: Number(rows[0].n), md5: rows[0].md5 });
    }
    return out;
  } finally {
    await client.query('ROLLBACK').catch(() => undefined);
  }
}
