import { homedir, userInfo } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DbcrateError, ErrorCodes, redact } from '@dbcrate/core';

/** The accepted destination forms, repeated in every E_BAD_URL so the user sees what to write. */
export const STORAGE_URL_FORMS = [
  'file:///absolute/path',
  's3://bucket/prefix[?endpoint=https://host:port&region=us-east-1&path_style=true&profile=NAME&part_size=105MiB&queue_size=1&checksums=when_required]',
  'sftp://user@host[:port]/path[?host_key=SHA256:…|known_hosts=/path&identity=/path/to/key&fsync=require|skip]',
].join('\n  ');

export type ChecksumMode = 'WHEN_REQUIRED' | 'WHEN_SUPPORTED';

export interface FsStorageConfig {
  kind: 'fs';
  /** Absolute local directory, the root of every key. */
  root: string;
  displayUrl: string;
}

export interface S3StorageConfig {
  kind: 's3';
  bucket: string;
  /** Key prefix without leading or trailing "/" ('' = bucket root). */
  prefix: string;
  endpoint?: string;
  region?: string;
  forcePathStyle: boolean;
  /** AWS shared-config profile; otherwise the SDK default chain (env vars, profile, instance role). */
  profile?: string;
  partSize?: number;
  queueSize?: number;
  checksums: ChecksumMode;
  displayUrl: string;
}

export interface SftpStorageConfig {
  kind: 'sftp';
  host: string;
  port: number;
  user: string;
  /** Remote directory; absolute, or relative to the login directory when the URL path starts with "/~/". */
  root: string;
  /** Pinned host key fingerprints ("SHA256:…"); when set, known_hosts is not consulted. */
  hostKeys: string[];
  knownHostsFile: string;
  identityFile?: string;
  /**
   * require (default): a put fsyncs the file and its directory (fsync@openssh.com) and
   * fails on a server without it; skip: the user accepts uploads that a server crash may lose.
   */
  fsync?: 'require' | 'skip';
  displayUrl: string;
}

export type StorageConfig = FsStorageConfig | S3StorageConfig | SftpStorageConfig;

/** S3 caps a multipart upload at 10,000 parts; the part size sets the largest object. */
export const S3_MAX_PARTS = 10_000;
export const S3_MIN_PART_SIZE = 5 * 1024 * 1024;
export const S3_MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;

function badUrl(what: string, raw: string, hint?: string): DbcrateError {
  return new DbcrateError(ErrorCodes.BAD_URL, `bad destination URL ${safeShow(raw)}: ${what}`, {
    hint: hint ?? `use one of:\n  ${STORAGE_URL_FORMS}`,
  });
}

/** Show the URL in a message without any userinfo (it may hold a key or password). */
function safeShow(raw: string): string {
  const shown = displayUrl(raw);
  return shown ? `"${shown}"` : '(empty)';
}

/**
 * The URL with anything secret removed, safe to print and log: no userinfo password, and no
 * userinfo at all for s3:// (it could only be an access key). Falls back to `redact`.
 */
export function displayUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return redact(raw).replace(/\/\/[^/@\s]*@/, '//');
  }
  if (u.password) u.password = '';
  if (u.protocol !== 'sftp:' && u.username) u.username = '';
  return redact(u.toString());
}

/** Parse a destination URL; anything not in STORAGE_URL_FORMS is E_BAD_URL saying what is wrong. */
export function parseStorageUrl(raw: string, env: NodeJS.ProcessEnv = process.env): StorageConfig {
  if (typeof raw !== 'string' || raw.trim() === '') throw badUrl('it is empty', '');
  const text = raw.trim();
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(text)?.[1]?.toLowerCase();
  if (!scheme) {
    throw badUrl(
      'it has no scheme',
      text,
      isAbsolute(text)
        ? `for a local folder write file://${text}\nor use one of:\n  ${STORAGE_URL_FORMS}`
        : undefined,
    );
  }
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw badUrl('it is not a valid URL', text);
  }
  switch (scheme) {
    case 'file':
      return parseFile(u, text);
    case 's3':
      return parseS3(u, text);
    case 'sftp':
      return parseSftp(u, text, env);
    default:
      throw badUrl(`unsupported scheme "${scheme}:"`, text);
  }
}

/** Query parameters, refusing unknown and repeated ones (a typo must not be silently ignored). */
function queryOf(u: URL, raw: string, allowed: string[], repeatable: string[] = []): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [k, v] of u.searchParams) {
    if (!allowed.includes(k)) {
      throw badUrl(
        `unknown query parameter "${k}"`,
        raw,
        allowed.length
          ? `${u.protocol}// accepts: ${allowed.join(', ')}`
          : `${u.protocol}// URLs take no query parameters`,
      );
    }
    const list = out.get(k) ?? [];
    if (list.length && !repeatable.includes(k)) throw badUrl(`query parameter "${k}" is given twice`, raw);
    list.push(v);
    out.set(k, list);
  }
  return out;
}

function parseFile(u: URL, raw: string): FsStorageConfig {
  if (u.username || u.password) throw badUrl('file:// URLs take no user or password', raw);
  if (u.hostname && u.hostname !== 'localhost') {
    throw badUrl(
      `"${u.hostname}" is read as a host name; a local folder must be an absolute path`,
      raw,
      `write three slashes: file:///absolute/path`,
    );
  }
  queryOf(u, raw, []);
  if (u.hash) throw badUrl('file:// URLs take no #fragment', raw);
  let root: string;
  try {
    root = fileURLToPath(u);
  } catch (e) {
    throw badUrl((e as Error).message, raw);
  }
  if (!isAbsolute(root)) throw badUrl('the path must be absolute', raw, 'write file:///absolute/path');
  root = root.length > 1 ? root.replace(/\/+$/, '') : root;
  return { kind: 'fs', root, displayUrl: displayUrl(raw) };
}

const BOOL: Record<string, boolean> = {
  true: true,
  '1': true,
  yes: true,
  false: false,
  '0': false,
  no: false,
};

function parseBool(name: string, v: string, raw: string): boolean {
  const b = BOOL[v.toLowerCase()];
  if (b === undefined) throw badUrl(`${name}="${v}" must be true or false`, raw);
  return b;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

/** "16MiB", "16M", "16777216" → bytes. Units are binary; decimal "MB" is refused as ambiguous. */
export function parseSize(v: string): number | undefined {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(v.trim());
  if (!m) return undefined;
  const unit = SIZE_UNITS[m[2].toLowerCase()];
  return unit === undefined ? undefined : Number(m[1]) * unit;
}

function isIpOrLocal(host: string): boolean {
  return host === 'localhost' || /^\d+\.\d+\.\d+\.\d+$/.test(host) || host.startsWith('[');
}

function parseS3(u: URL, raw: string): S3StorageConfig {
  if (u.username || u.password) {
    throw badUrl(
      'credentials are never taken from the URL',
      raw,
      'remove "user:secret@" and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment, ' +
        'or name a profile from ~/.aws/credentials with AWS_PROFILE or the "profile=" query parameter',
    );
  }
  const bucket = decodeURIComponent(u.hostname);
  if (!bucket) throw badUrl('the bucket name is missing', raw, 'write s3://bucket/prefix');
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{1,62}$/.test(bucket)) {
    throw badUrl(`"${bucket}" is not a valid bucket name (3–63 letters, digits, ".", "-", "_")`, raw);
  }
  if (u.port) throw badUrl('a port belongs in the endpoint= parameter, not after the bucket name', raw);
  const q = queryOf(u, raw, [
    'endpoint',
    'region',
    'path_style',
    'profile',
    'part_size',
    'queue_size',
    'checksums',
  ]);
  const one = (k: string): string | undefined => q.get(k)?.[0];

  let endpoint = one('endpoint');
  if (endpoint !== undefined) {
    let e: URL;
    try {
      e = new URL(endpoint);
    } catch {
      throw badUrl(`endpoint "${redact(endpoint)}" is not a URL`, raw, 'write endpoint=https://host:port');
    }
    if (e.protocol !== 'http:' && e.protocol !== 'https:') {
      throw badUrl(`endpoint must be http:// or https://, not ${e.protocol}`, raw);
    }
    if (e.username || e.password) {
      throw badUrl(
        'credentials are never taken from the URL (found in endpoint=)',
        raw,
        'set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE instead',
      );
    }
    endpoint = e.toString().replace(/\/$/, '');
  }
  const region = one('region');
  if (region !== undefined && !/^[a-z0-9-]+$/i.test(region))
    throw badUrl(`region "${region}" is not valid`, raw);

  // Virtual-hosted style cannot work against an IP address or localhost (no DNS per bucket),
  // so path style is the default there; elsewhere the SDK default (virtual-hosted) applies.
  const endpointHost = endpoint ? new URL(endpoint).hostname : undefined;
  const pathStyle = one('path_style');
  const forcePathStyle =
    pathStyle !== undefined
      ? parseBool('path_style', pathStyle, raw)
      : endpointHost
        ? isIpOrLocal(endpointHost)
        : false;

  let partSize: number | undefined;
  const ps = one('part_size');
  if (ps !== undefined) {
    partSize = parseSize(ps);
    if (partSize === undefined) throw badUrl(`part_size="${ps}" is not a size (e.g. 16MiB, 1GiB)`, raw);
    if (partSize < S3_MIN_PART_SIZE || partSize > S3_MAX_PART_SIZE) {
      throw badUrl(`part_size="${ps}" is outside S3's limits (5MiB to 5GiB)`, raw);
    }
  }
  let queueSize: number | undefined;
  const qs = one('queue_size');
  if (qs !== undefined) {
    queueSize = /^\d+$/.test(qs) ? Number(qs) : NaN;
    if (!(queueSize >= 1 && queueSize <= 16))
      throw badUrl(`queue_size="${qs}" must be a whole number 1..16`, raw);
  }
  const cs = (one('checksums') ?? 'when_required').toUpperCase();
  if (cs !== 'WHEN_REQUIRED' && cs !== 'WHEN_SUPPORTED') {
    throw badUrl(`checksums="${one('checksums')}" must be when_required or when_supported`, raw);
  }
  const profile = one('profile');
  if (profile !== undefined && profile.trim() === '') throw badUrl('profile= is empty', raw);

  const prefix = decodeURIComponent(u.pathname).replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((s) => s === '..' || s === '.'))
    throw badUrl('the prefix may not contain "." or ".."', raw);
  return {
    kind: 's3',
    bucket,
    prefix,
    endpoint,
    region,
    forcePathStyle,
    profile,
    partSize,
    queueSize,
    checksums: cs,
    displayUrl: displayUrl(raw),
  };
}

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}=?$/;

function parseSftp(u: URL, raw: string, env: NodeJS.ProcessEnv): SftpStorageConfig {
  if (u.password) {
    throw badUrl(
      'a password is never taken from the URL',
      raw,
      'remove ":password" and set DBCRATE_SFTP_PASSWORD in the environment, or use a key (identity=/path/to/key or DBCRATE_SFTP_IDENTITY)',
    );
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (!host) throw badUrl('the host is missing', raw, 'write sftp://user@host:port/path');
  const port = u.port ? Number(u.port) : 22;
  if (!(port >= 1 && port <= 65535)) throw badUrl(`port ${u.port} is out of range`, raw);
  const user = u.username ? decodeURIComponent(u.username) : safeUsername();
  if (!user) throw badUrl('the user is missing', raw, 'write sftp://user@host:port/path');

  const q = queryOf(u, raw, ['host_key', 'known_hosts', 'identity', 'fsync'], ['host_key']);
  const fsync = q.get('fsync')?.[0] ?? 'require';
  if (fsync !== 'require' && fsync !== 'skip')
    throw badUrl(`fsync=${fsync} is not require or skip`, raw, 'fsync=require (the default) or fsync=skip');
  const hostKeys = (q.get('host_key') ?? []).flatMap((v) => v.split(',')).map((v) => v.trim());
  for (const k of hostKeys) {
    if (!FINGERPRINT.test(k)) {
      throw badUrl(
        `host_key "${k}" is not a SHA256 fingerprint`,
        raw,
        'write host_key=SHA256:… as printed by `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the server',
      );
    }
  }
  const knownHosts = q.get('known_hosts')?.[0];
  if (knownHosts !== undefined && hostKeys.length)
    throw badUrl('give host_key= or known_hosts=, not both', raw);
  if (knownHosts !== undefined && !isAbsolute(knownHosts))
    throw badUrl('known_hosts= must be an absolute path', raw);
  const identity = q.get('identity')?.[0] ?? (env.DBCRATE_SFTP_IDENTITY || undefined);
  if (identity !== undefined && !isAbsolute(identity))
    throw badUrl('identity= must be an absolute path', raw);

  const path = decodeURIComponent(u.pathname);
  // "/~/x" and "/~" mean relative to the login directory (the curl convention).
  let root = path === '' || path === '/~' ? '.' : path.startsWith('/~/') ? path.slice(3) : path;
  root = root.length > 1 ? root.replace(/\/+$/, '') : root;
  if (root === '') root = '.';
  if (root.split('/').some((s) => s === '..')) throw badUrl('the path may not contain ".."', raw);
  return {
    kind: 'sftp',
    host,
    port,
    user,
    root,
    hostKeys,
    knownHostsFile: knownHosts ?? join(homedir(), '.ssh', 'known_hosts'),
    identityFile: identity,
    fsync,
    displayUrl: displayUrl(raw),
  };
}

function safeUsername(): string {
  try {
    return userInfo().username;
  } catch {
    return '';
  }
}
