import * as os from 'node:os';
import { DbcrateError, ErrorCodes, MASK, redact, registerSecret } from '@dbcrate/core';

/**
 * PostgreSQL connection strings: parsing, masking, and the libpq environment for child
 * processes. The URL is the single source of truth for the target: inherited PGHOST, PGUSER,
 * … are ignored (so `pg` and pg_dump always reach the same server), except PGPASSWORD and
 * PGPASSFILE, which stay usable so a password can be kept out of the URL altogether.
 */

export type SslMode = 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';
const SSL_MODES: readonly SslMode[] = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

export interface ConnInfo {
  /** Host name, IP address, or (when `socket`) the directory holding the Unix socket. */
  host: string;
  /** Numeric address to connect to instead of resolving `host` (libpq `hostaddr`). */
  hostaddr?: string;
  port: number;
  user: string;
  password?: string;
  database: string;
  socket: boolean;
  sslmode: SslMode;
  /** Other libpq parameters by keyword (application_name, sslrootcert, …), validated. */
  params: Record<string, string>;
}

/** Where libpq on Debian looks for the socket when no host is given. */
export const DEFAULT_SOCKET_DIR = '/var/run/postgresql';
export const DEFAULT_PORT = 5432;

export const ACCEPTED_URL_FORM =
  'postgres://USER:PASSWORD@HOST:PORT/DBNAME?sslmode=require (or postgresql://…; ' +
  'Unix socket: postgres://USER@/DBNAME?host=/var/run/postgresql; ' +
  'or key=value form: "host=HOST port=PORT dbname=DBNAME user=USER")';

/** libpq keyword → environment variable. Only keywords with an env equivalent are accepted, since child tools get everything through the environment. */
const ENV_OF: Readonly<Record<string, string>> = {
  host: 'PGHOST',
  hostaddr: 'PGHOSTADDR',
  port: 'PGPORT',
  dbname: 'PGDATABASE',
  user: 'PGUSER',
  password: 'PGPASSWORD',
  passfile: 'PGPASSFILE',
  sslmode: 'PGSSLMODE',
  sslrootcert: 'PGSSLROOTCERT',
  sslcert: 'PGSSLCERT',
  sslkey: 'PGSSLKEY',
  sslcrl: 'PGSSLCRL',
  sslcrldir: 'PGSSLCRLDIR',
  sslsni: 'PGSSLSNI',
  ssl_min_protocol_version: 'PGSSLMINPROTOCOLVERSION',
  ssl_max_protocol_version: 'PGSSLMAXPROTOCOLVERSION',
  channel_binding: 'PGCHANNELBINDING',
  gssencmode: 'PGGSSENCMODE',
  krbsrvname: 'PGKRBSRVNAME',
  require_auth: 'PGREQUIREAUTH',
  application_name: 'PGAPPNAME',
  connect_timeout: 'PGCONNECT_TIMEOUT',
  options: 'PGOPTIONS',
  target_session_attrs: 'PGTARGETSESSIONATTRS',
  client_encoding: 'PGCLIENTENCODING',
};

/** Parameters other drivers accept that libpq does not; say what to write instead. */
const FOREIGN_PARAMS: Readonly<Record<string, string>> = {
  ssl: 'use sslmode=require (or verify-full) instead of ssl=…',
  schema: 'dbcrate backs up whole databases; remove schema=…',
  currentschema: 'dbcrate backs up whole databases; remove currentSchema=…',
};

/** Inherited libpq variables that would silently redirect a child tool; removed from its environment. */
export const SCRUBBED_PG_ENV: readonly string[] = [
  ...Object.values(ENV_OF).filter((v) => v !== 'PGPASSWORD' && v !== 'PGPASSFILE'),
  'PGSERVICE',
  'PGSERVICEFILE',
  'PGREQUIRESSL',
  'PGSSLCOMPRESSION',
  'PGLOCALEDIR',
];

function badUrl(input: string, why: string): DbcrateError {
  return new DbcrateError(
    ErrorCodes.BAD_URL,
    `Invalid PostgreSQL connection string "${maskConnectionString(input)}": ${why}`,
    {
      hint: `Use ${ACCEPTED_URL_FORM}. Percent-encode special characters in the password (e.g. @ as %40).`,
    },
  );
}

function decode(input: string, part: string, what: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    // Well-formed %XX escapes that are not UTF-8 (a LATIN1 name, say): libpq and the server
    // would compare other bytes and answer "does not exist", which sends the user the wrong way.
    if (/^(?:[^%]|%[0-9A-Fa-f]{2})*$/.test(part)) {
      throw new DbcrateError(
        ErrorCodes.BAD_URL,
        `the ${what} in "${maskConnectionString(input)}" is not valid UTF-8 once percent-decoded`,
        {
          hint: `dbcrate sends names as UTF-8; rename the object to a UTF-8 name (ALTER DATABASE … RENAME TO …) and retry`,
        },
      );
    }
    throw badUrl(input, `bad percent-encoding in the ${what}`);
  }
}

/** Parse a `postgres://` / `postgresql://` URL or a libpq key=value string. */
export function parseConnectionString(input: string): ConnInfo {
  const s = input.trim();
  if (s === '') throw badUrl(input, 'it is empty');
  const raw = /^postgres(ql)?:\/\//i.test(s) ? parseUrlParams(input, s) : parseKeyValueParams(input, s);
  return finish(input, raw);
}

function parseUrlParams(input: string, s: string): Map<string, string> {
  const out = new Map<string, string>();
  let rest = s.replace(/^postgres(ql)?:\/\//i, '');
  const hashAt = rest.indexOf('#');
  if (hashAt >= 0) rest = rest.slice(0, hashAt);
  const qAt = rest.indexOf('?');
  const query = qAt >= 0 ? rest.slice(qAt + 1) : '';
  if (qAt >= 0) rest = rest.slice(0, qAt);
  const slashAt = rest.indexOf('/');
  const authority = slashAt >= 0 ? rest.slice(0, slashAt) : rest;
  const path = slashAt >= 0 ? rest.slice(slashAt + 1) : '';

  // The last '@' ends the userinfo, so an unencoded '@' in the password still parses.
  const atAt = authority.lastIndexOf('@');
  const userinfo = atAt >= 0 ? authority.slice(0, atAt) : '';
  const hostport = atAt >= 0 ? authority.slice(atAt + 1) : authority;
  if (atAt >= 0) {
    const colon = userinfo.indexOf(':');
    const user = colon >= 0 ? userinfo.slice(0, colon) : userinfo;
    if (user) out.set('user', decode(input, user, 'user name'));
    if (colon >= 0) out.set('password', decode(input, userinfo.slice(colon + 1), 'password'));
  }

  if (hostport.includes(',')) {
    throw badUrl(input, 'several hosts are not supported; give the one server to back up');
  }
  if (hostport.startsWith('[')) {
    const m = /^\[([0-9a-fA-F:.%]+)\](?::(.*))?$/.exec(hostport);
    if (!m) throw badUrl(input, 'malformed IPv6 address (write it as [addr]:port)');
    out.set('host', m[1]);
    if (m[2] !== undefined) out.set('port', m[2]);
  } else if (hostport) {
    const colon = hostport.lastIndexOf(':');
    const host = colon >= 0 ? hostport.slice(0, colon) : hostport;
    if (host) out.set('host', decode(input, host, 'host'));
    if (colon >= 0) out.set('port', hostport.slice(colon + 1));
  }
  if (path) out.set('dbname', decode(input, path, 'database name'));

  for (const pair of query.split('&')) {
    if (!pair) continue;
    const eq = pair.indexOf('=');
    if (eq < 0) throw badUrl(input, `query parameter "${pair}" has no value`);
    const key = decode(input, pair.slice(0, eq), 'query').replace(/\+/g, ' ');
    const value = decode(input, pair.slice(eq + 1).replace(/\+/g, ' '), 'query');
    out.set(key, value);
  }
  return out;
}

/** libpq key=value syntax: values bare or in single quotes, backslash escapes. */
function parseKeyValueParams(input: string, s: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  const ws = () => {
    while (i < s.length && /\s/.test(s[i])) i++;
  };
  while (true) {
    ws();
    if (i >= s.length) break;
    const keyStart = i;
    while (i < s.length && /[A-Za-z0-9_]/.test(s[i])) i++;
    const key = s.slice(keyStart, i);
    ws();
    if (!key || s[i] !== '=') {
      throw badUrl(input, 'expected a postgres:// URL or key=value pairs');
    }
    i++;
    ws();
    let value = '';
    if (s[i] === "'") {
      i++;
      let closed = false;
      while (i < s.length) {
        if (s[i] === '\\' && i + 1 < s.length) {
          value += s[i + 1];
          i += 2;
        } else if (s[i] === "'") {
          i++;
          closed = true;
          break;
        } else value += s[i++];
      }
      if (!closed) throw badUrl(input, `unterminated quoted value for "${key}"`);
    } else {
      while (i < s.length && !/\s/.test(s[i])) {
        if (s[i] === '\\' && i + 1 < s.length) {
          value += s[i + 1];
          i += 2;
        } else value += s[i++];
      }
    }
    out.set(key, value);
  }
  if (out.size === 0) throw badUrl(input, 'no parameters found');
  return out;
}

function finish(input: string, raw: Map<string, string>): ConnInfo {
  const params: Record<string, string> = {};
  for (const [key, value] of raw) {
    if (!(key in ENV_OF)) {
      const advice = FOREIGN_PARAMS[key.toLowerCase()];
      throw badUrl(input, `unsupported parameter "${key}"${advice ? ` (${advice})` : ''}`);
    }
    params[key] = value;
  }
  const password = params.password;
  registerSecret(password);
  delete params.password;

  const host = params.host || DEFAULT_SOCKET_DIR;
  delete params.host;
  if (host.includes(','))
    throw badUrl(input, 'several hosts are not supported; give the one server to back up');
  const socket = host.startsWith('/');

  const portText = params.port ?? String(DEFAULT_PORT);
  delete params.port;
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) throw badUrl(input, `bad port "${portText}"`);

  const sslmode = (params.sslmode ?? 'prefer') as SslMode;
  delete params.sslmode;
  if (!SSL_MODES.includes(sslmode)) {
    throw badUrl(input, `bad sslmode "${sslmode}" (one of ${SSL_MODES.join(', ')})`);
  }

  const hostaddr = params.hostaddr || undefined;
  delete params.hostaddr;
  // libpq's defaults: the OS user name, and a database named like the user.
  const user = params.user || os.userInfo().username;
  delete params.user;
  const database = params.dbname || user;
  delete params.dbname;

  return { host, hostaddr, port, user, password, database, socket, sslmode, params };
}

/** `user@host:port/db` for messages; never holds the password. */
export function describeConnInfo(info: ConnInfo): string {
  const host = info.host.includes(':') && !info.socket ? `[${info.host}]` : info.host;
  return `${info.user}@${host}:${info.port}/${info.database}`;
}

/**
 * Replace the password in a URL or key=value string with ***. Works on malformed input
 * too (it errs on the side of masking more), since it is used to print bad URLs.
 */
export function maskConnectionString(s: string): string {
  let out = s;
  const scheme = /^(\s*[a-z][a-z0-9+.-]*:\/\/)/i.exec(out);
  if (scheme) {
    const head = scheme[1];
    const rest = out.slice(head.length);
    const qAt = rest.indexOf('?');
    const beforeQuery = qAt >= 0 ? rest.slice(0, qAt) : rest;
    // Normally the userinfo ends at the last '@' before '?'; with none there, a '?' may sit
    // inside an unencoded password, so take the last '@' anywhere.
    const atAt = beforeQuery.includes('@') ? beforeQuery.lastIndexOf('@') : rest.lastIndexOf('@');
    if (atAt >= 0) {
      const colon = rest.indexOf(':');
      if (colon >= 0 && colon < atAt) {
        out = head + beforeQuery.slice(0, colon + 1) + MASK + rest.slice(atAt);
      }
    }
    out = out.replace(/([?&]password=)[^&#]*/gi, `$1${MASK}`);
  } else {
    // key=value: bare value, or quoted with backslash escapes.
    out = out.replace(/(\bpassword\s*=\s*)('(?:\\.|[^'\\])*'?|(?:\\.|[^\s\\])+)/gi, `$1${MASK}`);
  }
  return redact(out);
}

export interface LibpqEnv {
  /** PG* variables for a child process (to be merged over a scrubbed environment, see `childEnv`). */
  env: Record<string, string>;
  /** The database name, for display or for tools that take a name. */
  dbname: string;
  /**
   * What to pass as `-d`/`--dbname`: the plain name, or a `dbname='…'` conninfo when the
   * name would otherwise be read as a connection string (contains `=` or starts with a URI prefix).
   */
  dbnameArg: string;
}

/** The libpq environment for pg_dump/pg_restore/psql: the password travels here, never in argv. */
export function toLibpqEnv(url: string | ConnInfo): LibpqEnv {
  const info = typeof url === 'string' ? parseConnectionString(url) : url;
  const env: Record<string, string> = {
    PGHOST: info.host,
    PGPORT: String(info.port),
    PGUSER: info.user,
    PGDATABASE: info.database,
    PGSSLMODE: info.sslmode,
  };
  if (info.hostaddr) env.PGHOSTADDR = info.hostaddr;
  if (info.password !== undefined) {
    registerSecret(info.password);
    env.PGPASSWORD = info.password;
  } else {
    registerSecret(process.env.PGPASSWORD);
  }
  for (const [k, v] of Object.entries(info.params)) env[ENV_OF[k]] = v;
  const needsConninfo = info.database.includes('=') || /^postgres(ql)?:\/\//i.test(info.database);
  const dbnameArg = needsConninfo
    ? `dbname='${info.database.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
    : info.database;
  return { env, dbname: info.database, dbnameArg };
}

/** process.env without inherited connection variables, with `libpq` laid over it. */
export function childEnv(
  libpq: Record<string, string>,
  base: NodeJS.ProcessEnv = process.env,
): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const k of SCRUBBED_PG_ENV) delete env[k];
  return { ...env, ...libpq };
}
