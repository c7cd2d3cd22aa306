import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import SftpClient from 'ssh2-sftp-client';
import type { ConnectConfig, FileEntryWithStats, SFTPWrapper, Stats } from 'ssh2';
import { DbcrateError, ErrorCodes, redact, registerSecret } from '@dbcrate/core';
import {
  fingerprintOf,
  hostKeyAlgorithmsFor,
  keyTypeOf,
  knownHostEntries,
  knownHostsName,
  sameFingerprint,
} from './known-hosts';
import type { ObjectInfo, PutOptions, Storage } from './storage';
import type { SftpStorageConfig } from './storage-url';
import {
  baseName,
  causeText,
  checkKey,
  checkPrefix,
  chunksOf,
  dirName,
  discard,
  interrupted,
  isSourceError,
  isTempName,
  tempNameFor,
  OP_VERB,
  type StorageOp,
} from './storage.util';

export interface SftpStorageOptions {
  /** Overrides DBCRATE_SFTP_PASSWORD. */
  password?: string;
  /** Private key text; overrides identity= / DBCRATE_SFTP_IDENTITY. */
  privateKey?: string | Buffer;
  /** Overrides DBCRATE_SFTP_PASSPHRASE (for an encrypted private key). */
  passphrase?: string;
  /** TCP connect + SSH handshake timeout. */
  connectTimeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

// SFTP status codes (draft-ietf-secsh-filexfer-02).
const FX_NO_SUCH_FILE = 2;
const FX_PERMISSION_DENIED = 3;
const FX_NO_CONNECTION = 6;
const FX_CONNECTION_LOST = 7;

/** Writes in flight per upload × slice size bounds the memory an upload holds (2 MiB). */
const WRITE_SLICE = 64 * 1024;
const WRITES_IN_FLIGHT = 32;

type Op = StorageOp;
const VERB = OP_VERB;

interface SshError {
  code?: number | string;
  level?: string;
  message?: string;
}

/** Map an ssh2 / SFTP error to a typed one. */
export function mapSftpError(e: unknown, op: Op, target: string, where: string): DbcrateError {
  if (e instanceof DbcrateError) return e;
  const err = (e ?? {}) as SshError;
  const text = redact(causeText(e).replace(/^[\w.>-]+: /, ''));
  const head = op === 'connect' ? `cannot connect to ${where}` : `cannot ${VERB[op]} ${target} in ${where}`;
  const code = err.code;
  if (code === FX_NO_SUCH_FILE || code === 'ENOENT' || code === 'ERR_NOT_EXIST') {
    return new DbcrateError(ErrorCodes.STORAGE_NOT_FOUND, `${head}: it does not exist`, { cause: e });
  }
  if (code === FX_PERMISSION_DENIED || code === 'EACCES') {
    return new DbcrateError(ErrorCodes.STORAGE_DENIED, `${head}: permission denied`, {
      cause: e,
      hint: 'make the remote folder writable by the SFTP user, or choose another path',
    });
  }
  if (
    err.level === 'client-authentication' ||
    /authentication methods failed|Cannot parse privateKey|passphrase/i.test(text)
  ) {
    return new DbcrateError(ErrorCodes.STORAGE_DENIED, `${head}: authentication failed (${text})`, {
      cause: e,
      hint:
        'check the user, and the key (identity= or DBCRATE_SFTP_IDENTITY, DBCRATE_SFTP_PASSPHRASE if it is encrypted) ' +
        "or the password (DBCRATE_SFTP_PASSWORD); the key must be in the server's authorized_keys",
    });
  }
  if (
    code === FX_NO_CONNECTION ||
    code === FX_CONNECTION_LOST ||
    err.level === 'client-timeout' ||
    err.level === 'client-socket' ||
    (typeof code === 'string' &&
      /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|ERR_NOT_CONNECTED|ERR_GENERIC_CLIENT)$/.test(
        code,
      )) ||
    /refused|timed out|no response|not connected|connection lost|socket|handshake/i.test(text)
  ) {
    return new DbcrateError(
      ErrorCodes.STORAGE_UNREACHABLE,
      `${head}: the SFTP server is unreachable (${text})`,
      {
        cause: e,
        hint: 'check the host and port in the URL, that sshd runs there, and firewalls in between',
      },
    );
  }
  return new DbcrateError(ErrorCodes.STORAGE_IO, `${head}: ${text}`, { cause: e });
}

function sftpCode(e: unknown): number | string | undefined {
  return (e as SshError)?.code;
}

interface Session {
  client: SftpClient;
  sftp: SFTPWrapper;
  /** Directories known to exist, so repeated puts (WAL) skip the stat round trips. */
  dirs: Set<string>;
}

/**
 * An SFTP folder over ssh2-sftp-client. A put writes a hidden temp file, fsyncs it
 * (fsync@openssh.com) and renames it into place: posix-rename@openssh.com replaces atomically;
 * for ifNotExists, hardlink@openssh.com (like link(2)) refuses an existing name. Then the
 * directory is opened and fsynced the same way (OpenSSH's sftp-server opens directories like
 * files). A server without fsync@openssh.com fails the put unless the URL says fsync=skip. The host key is always verified: a pinned fingerprint
 * or a matching known_hosts entry, nothing else.
 */
/** Drop `dir` and everything under it from the session's cache of folders known to exist. */
function forgetDirs(s: Session, dir: string): void {
  for (const d of s.dirs) if (d === dir || d.startsWith(`${dir}/`)) s.dirs.delete(d);
}

export class SftpStorage implements Storage {
  readonly displayUrl: string;
  private session?: Promise<Session>;
  private closed = false;

  constructor(
    private readonly cfg: SftpStorageConfig,
    private readonly opts: SftpStorageOptions = {},
  ) {
    this.displayUrl = cfg.displayUrl;
    const env = opts.env ?? process.env;
    registerSecret(opts.password ?? env.DBCRATE_SFTP_PASSWORD);
    registerSecret(opts.passphrase ?? env.DBCRATE_SFTP_PASSPHRASE);
  }

  /** Connect now (the factory does, so a bad host key or password shows at open time). */
  async connect(): Promise<void> {
    await this.conn();
  }

  private conn(): Promise<Session> {
    if (this.closed)
      return Promise.reject(new DbcrateError(ErrorCodes.INTERNAL, `${this.displayUrl} is closed`));
    this.session ??= this.open().catch((e: unknown) => {
      this.session = undefined;
      throw e;
    });
    return this.session;
  }

  private async open(): Promise<Session> {
    const { cfg } = this;
    const env = this.opts.env ?? process.env;
    const where = `${this.displayUrl}`;
    const cc: ConnectConfig = {
      host: cfg.host,
      port: cfg.port,
      username: cfg.user,
      readyTimeout: this.opts.connectTimeoutMs ?? 10_000,
      // Notice a dead peer during a long upload instead of hanging on it.
      keepaliveInterval: 15_000,
      keepaliveCountMax: 4,
    };
    const password = this.opts.password ?? env.DBCRATE_SFTP_PASSWORD;
    if (password) cc.password = password;
    const passphrase = this.opts.passphrase ?? env.DBCRATE_SFTP_PASSPHRASE;
    let keyFile = cfg.identityFile;
    if (this.opts.privateKey) {
      cc.privateKey = this.opts.privateKey;
    } else {
      if (!keyFile && !password) {
        // Like ssh: the default identities, then the agent.
        keyFile = ['id_ed25519', 'id_ecdsa', 'id_rsa']
          .map((n) => posix.join(homedir(), '.ssh', n))
          .find((p) => existsSync(p));
        if (env.SSH_AUTH_SOCK) cc.agent = env.SSH_AUTH_SOCK;
      }
      if (keyFile) {
        try {
          cc.privateKey = await readFile(keyFile);
        } catch (e) {
          throw new DbcrateError(
            ErrorCodes.CONFIG,
            `cannot read the SFTP identity file ${keyFile}: ${causeText(e)}`,
            {
              cause: e,
              hint: 'set identity= (or DBCRATE_SFTP_IDENTITY) to a readable private key file',
            },
          );
        }
      }
    }
    if (cc.privateKey && passphrase) cc.passphrase = passphrase;
    if (!cc.privateKey && !cc.password && !cc.agent) {
      throw new DbcrateError(ErrorCodes.CONFIG, `no SFTP credentials for ${where}`, {
        hint: 'give a private key (identity=/path in the URL or DBCRATE_SFTP_IDENTITY) or a password (DBCRATE_SFTP_PASSWORD)',
      });
    }

    const verdict = await this.hostKeyPolicy();
    let refusal: DbcrateError | undefined;
    cc.hostVerifier = (key: Buffer): boolean => {
      refusal = verdict.check(key);
      return refusal === undefined;
    };
    if (verdict.algorithms.length) cc.algorithms = { serverHostKey: verdict.algorithms as never };

    const quiet = (): void => undefined;
    const client = new SftpClient('dbcrate', { error: quiet, end: quiet, close: quiet });
    try {
      const sftp = await client.connect(cc as SftpClient.ConnectOptions);
      const session: Session = { client, sftp, dirs: new Set() };
      // A dropped connection is re-opened by the next operation. The SFTP channel reports
      // the loss as an 'error' event too; unhandled, that would crash the process.
      const forget = (): void => {
        if (this.session) void this.session.then((s) => s === session && (this.session = undefined), quiet);
      };
      client.on('close', forget);
      sftp.on('error', forget);
      return session;
    } catch (e) {
      // ssh2-sftp-client's end() does nothing before the SFTP channel exists; end the socket.
      (client as unknown as { client?: { end(): void } }).client?.end();
      if (refusal) throw refusal;
      throw mapSftpError(e, 'connect', '', where);
    }
  }

  /** The host key rule for this destination: pinned fingerprints, else known_hosts. */
  private async hostKeyPolicy(): Promise<{
    check: (key: Buffer) => DbcrateError | undefined;
    algorithms: string[];
  }> {
    const { cfg } = this;
    const hostPort = `${cfg.host}:${cfg.port}`;
    const how = (fp: string): string =>
      `check the fingerprint with the server's administrator (on the server: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), ` +
      `then pin it by adding ?host_key=${fp} to the URL, or add the key to ${cfg.knownHostsFile} ` +
      `(ssh-keyscan -p ${cfg.port} ${cfg.host} >> ${cfg.knownHostsFile})`;
    if (cfg.hostKeys.length) {
      return {
        algorithms: [],
        check: (key) => {
          const fp = fingerprintOf(key);
          if (cfg.hostKeys.some((k) => sameFingerprint(k, fp))) return undefined;
          return new DbcrateError(
            ErrorCodes.HOST_KEY,
            `SFTP host ${hostPort} presented host key ${keyTypeOf(key)} ${fp}, which is not the pinned ${cfg.hostKeys.join(', ')}; refusing to connect`,
            {
              hint: `if the server's key was changed on purpose, ${how(fp)}; otherwise someone may be intercepting the connection`,
            },
          );
        },
      };
    }
    let text = '';
    try {
      text = await readFile(cfg.knownHostsFile, 'utf8');
    } catch (e) {
      if (sftpCode(e) !== 'ENOENT') {
        throw new DbcrateError(
          ErrorCodes.CONFIG,
          `cannot read known_hosts file ${cfg.knownHostsFile}: ${causeText(e)}`,
          {
            cause: e,
          },
        );
      }
    }
    const entries = knownHostEntries(text, cfg.host, cfg.port);
    const valid = entries.filter((en) => !en.marker);
    const revoked = entries.filter((en) => en.marker === '@revoked');
    return {
      algorithms: hostKeyAlgorithmsFor([...new Set(valid.map((en) => en.keyType))]),
      check: (key) => {
        const fp = fingerprintOf(key);
        const type = keyTypeOf(key);
        if (revoked.some((en) => en.key.equals(key))) {
          return new DbcrateError(
            ErrorCodes.HOST_KEY,
            `SFTP host ${hostPort} presented a revoked host key (${type} ${fp})`,
          );
        }
        if (valid.some((en) => en.key.equals(key))) return undefined;
        if (valid.length) {
          return new DbcrateError(
            ErrorCodes.HOST_KEY,
            `SFTP host ${hostPort} presented host key ${type} ${fp}, which does NOT match its entry in ${cfg.knownHostsFile}; refusing to connect`,
            {
              hint: `someone may be intercepting the connection. If the key was changed on purpose, remove the old line (ssh-keygen -R '${knownHostsName(cfg.host, cfg.port)}' -f ${cfg.knownHostsFile}) and ${how(fp)}`,
            },
          );
        }
        return new DbcrateError(
          ErrorCodes.HOST_KEY,
          `SFTP host ${hostPort} presented an unknown host key ${type} ${fp} (not in ${cfg.knownHostsFile}); refusing to connect`,
          { hint: how(fp) },
        );
      },
    };
  }

  private pathOf(key: string): string {
    return key === '' ? this.cfg.root : posix.join(this.cfg.root, key);
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<{ size: number }> {
    checkKey(key);
    const what = `upload of "${key}" to ${this.displayUrl}`;
    let s: Session | undefined;
    let handle: Buffer | undefined;
    let tmp: string | undefined;
    try {
      if (opts.signal?.aborted) throw interrupted(what);
      s = await this.conn();
      const final = this.pathOf(key);
      const dir = posix.dirname(final);
      await this.mkdirs(s, dir);
      if (opts.ifNotExists && (await this.statOf(s, final))) throw this.conflict(key);
      tmp = posix.join(dir, tempNameFor(baseName(key)));
      handle = await call<Buffer>((cb) => s!.sftp.open(tmp!, 'wx', 0o600, cb)).catch(async (e: unknown) => {
        // The folder was removed since it was made or cached (another writer's cleanup of an
        // empty folder): make it again, once.
        if (sftpCode(e) !== FX_NO_SUCH_FILE) throw e;
        forgetDirs(s!, dir);
        await this.mkdirs(s!, dir);
        return call<Buffer>((cb) => s!.sftp.open(tmp!, 'wx', 0o600, cb));
      });
      const size = await this.writeAll(s.sftp, handle, body, opts.signal, what);
      await this.fsync(s.sftp, handle);
      const h = handle;
      handle = undefined;
      await call((cb) => s!.sftp.close(h, cb));
      if (opts.signal?.aborted) throw interrupted(what);
      await opts.beforeCommit?.();
      await this.moveIntoPlace(s, tmp, final, key, opts.ifNotExists === true);
      tmp = undefined;
      await this.fsyncDir(s, dir);
      return { size };
    } catch (e) {
      discard(body);
      if (s && handle) {
        const h = handle;
        await call((cb) => s!.sftp.close(h, cb)).catch(() => undefined);
      }
      if (s && tmp) {
        const t = tmp;
        await call((cb) => s!.sftp.unlink(t, cb)).catch(() => undefined);
      }
      if (opts.signal?.aborted) throw interrupted(what);
      if (isSourceError(e)) throw e;
      throw mapSftpError(e, 'write', `"${key}"`, this.displayUrl);
    }
  }

  /** Pipelined writes: up to WRITES_IN_FLIGHT requests outstanding, so latency does not cap throughput. */
  private async writeAll(
    sftp: SFTPWrapper,
    handle: Buffer,
    body: Readable,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<number> {
    const inflight = new Set<Promise<void>>();
    let failure: unknown;
    let pos = 0;
    try {
      for await (const chunk of chunksOf(body, signal, what)) {
        for (let off = 0; off < chunk.length; off += WRITE_SLICE) {
          const piece = chunk.subarray(off, Math.min(chunk.length, off + WRITE_SLICE));
          while (inflight.size >= WRITES_IN_FLIGHT) await Promise.race(inflight);
          if (failure !== undefined) throw failure;
          const at = pos;
          const p: Promise<void> = call((cb) => sftp.write(handle, piece, 0, piece.length, at, cb))
            .then(() => undefined)
            .catch((e: unknown) => {
              failure ??= e;
            })
            .finally(() => inflight.delete(p));
          inflight.add(p);
          pos += piece.length;
        }
      }
    } finally {
      await Promise.all(inflight);
    }
    if (failure !== undefined) throw failure;
    return pos;
  }

  private async fsync(sftp: SFTPWrapper, handle: Buffer, what = 'the uploaded file'): Promise<void> {
    if (this.cfg.fsync === 'skip') return;
    try {
      await call((cb) => sftp.ext_openssh_fsync(handle, cb));
    } catch (e) {
      if (!/does not support/i.test(causeText(e))) throw e;
      throw new DbcrateError(
        ErrorCodes.STORAGE_IO,
        `the SFTP server ${this.cfg.host} does not support fsync@openssh.com: ${what} cannot be made durable, so it is not acknowledged`,
        {
          hint: 'use a server that has it (OpenSSH does), or accept that a crash of the server may lose acknowledged uploads: add fsync=skip to the URL',
        },
      );
    }
  }

  /** After the rename: the directory entry must be durable too (OpenSSH opens and fsyncs a directory). */
  private async fsyncDir(s: Session, dir: string): Promise<void> {
    if (this.cfg.fsync === 'skip') return;
    let handle: Buffer;
    try {
      handle = await call<Buffer>((cb) => s.sftp.open(dir, 'r', cb));
    } catch (e) {
      throw new DbcrateError(
        ErrorCodes.STORAGE_IO,
        `cannot sync the directory ${dir} on the SFTP server ${this.cfg.host} (${causeText(e)}): the upload is not acknowledged as durable`,
        {
          hint: 'accept that a crash of the server may lose acknowledged uploads: add fsync=skip to the URL',
        },
      );
    }
    try {
      await this.fsync(s.sftp, handle, `the directory ${dir}`);
    } finally {
      await call((cb) => s.sftp.close(handle, cb)).catch(() => undefined);
    }
  }

  private async moveIntoPlace(
    s: Session,
    tmp: string,
    final: string,
    key: string,
    ifNotExists: boolean,
  ): Promise<void> {
    const { sftp } = s;
    if (ifNotExists) {
      try {
        await call((cb) => sftp.ext_openssh_hardlink(tmp, final, cb));
      } catch (e) {
        if (!/does not support/i.test(causeText(e))) {
          // OpenSSH answers a taken name with a generic failure; look before calling it a conflict.
          if (await this.statOf(s, final)) throw this.conflict(key);
          throw e;
        }
        // No hardlink extension: a plain SFTP rename must not replace an existing file (v3 spec).
        try {
          await call((cb) => sftp.rename(tmp, final, cb));
          return;
        } catch (e2) {
          if (await this.statOf(s, final)) throw this.conflict(key);
          throw e2;
        }
      }
      await call((cb) => sftp.unlink(tmp, cb));
      return;
    }
    try {
      await call((cb) => sftp.ext_openssh_rename(tmp, final, cb));
    } catch (e) {
      if (!/does not support/i.test(causeText(e))) throw e;
      // Without posix-rename a plain rename refuses to replace: remove the old object first.
      await call((cb) => sftp.unlink(final, cb)).catch(() => undefined);
      await call((cb) => sftp.rename(tmp, final, cb));
    }
  }

  private conflict(key: string): DbcrateError {
    return new DbcrateError(ErrorCodes.STORAGE_CONFLICT, `"${key}" already exists in ${this.displayUrl}`, {
      hint: 'objects are never overwritten; choose another name or delete the existing object first',
    });
  }

  async checkRoot(): Promise<void> {
    let st: Stats | undefined;
    try {
      st = await this.statOf(await this.conn(), this.pathOf(''));
    } catch (e) {
      throw mapSftpError(e, 'list', 'the root folder', this.displayUrl);
    }
    if (!st?.isDirectory()) {
      throw new DbcrateError(
        ErrorCodes.STORAGE_NOT_FOUND,
        st
          ? `the path of ${this.displayUrl} is a file, not a folder`
          : `the folder of ${this.displayUrl} does not exist`,
        { hint: 'check the path in the sftp:// URL' },
      );
    }
  }

  private async statOf(s: Session, path: string): Promise<Stats | undefined> {
    try {
      return await call<Stats>((cb) => s.sftp.stat(path, cb));
    } catch (e) {
      if (sftpCode(e) === FX_NO_SUCH_FILE) return undefined;
      throw e;
    }
  }

  private async mkdirs(s: Session, dir: string): Promise<void> {
    if (dir === '.' || dir === '/' || s.dirs.has(dir)) return;
    const st = await this.statOf(s, dir);
    if (!st) {
      await this.mkdirs(s, posix.dirname(dir));
      try {
        await call((cb) => s.sftp.mkdir(dir, cb));
      } catch (e) {
        // Created meanwhile by another writer: fine.
        if (!(await this.statOf(s, dir))?.isDirectory()) throw e;
      }
    } else if (!st.isDirectory()) {
      throw new DbcrateError(
        ErrorCodes.STORAGE_IO,
        `${dir} exists on ${this.cfg.host} and is not a directory`,
      );
    }
    s.dirs.add(dir);
  }

  async get(key: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> {
    checkKey(key);
    try {
      const s = await this.conn();
      const path = this.pathOf(key);
      const handle = await call<Buffer>((cb) => s.sftp.open(path, 'r', cb));
      const stream = s.sftp.createReadStream(path, { handle, autoClose: true });
      // Closing the handle after the last byte can fail if the connection goes first; the
      // reader is done by then and has no error listener left, so keep that quiet.
      stream.once('end', () => stream.on('error', () => undefined));
      if (opts.signal) {
        const onAbort = (): void => {
          stream.destroy(interrupted(`download of "${key}" from ${this.displayUrl}`));
        };
        if (opts.signal.aborted) onAbort();
        else opts.signal.addEventListener('abort', onAbort, { once: true });
        stream.once('close', () => opts.signal?.removeEventListener('abort', onAbort));
      }
      return stream;
    } catch (e) {
      throw mapSftpError(e, 'read', `"${key}"`, this.displayUrl);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    checkKey(key);
    try {
      const s = await this.conn();
      const st = await this.statOf(s, this.pathOf(key));
      return st?.isFile() ? { key, size: st.size, lastModified: new Date(st.mtime * 1000) } : undefined;
    } catch (e) {
      throw mapSftpError(e, 'stat', `"${key}"`, this.displayUrl);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkPrefix(prefix);
    let s: Session;
    try {
      s = await this.conn();
    } catch (e) {
      throw mapSftpError(e, 'list', 'objects', this.displayUrl);
    }
    const start = prefix === '' || prefix.endsWith('/') ? prefix.replace(/\/$/, '') : dirName(prefix);
    yield* this.walk(s, start, prefix);
  }

  /**
   * Folders and files reached through symlinks are listed like real ones. SFTP has no inode
   * numbers, so a linked folder is resolved with realpath and skipped when it is the folder
   * being walked or one of its parents (a loop) or was walked already.
   */
  private async *walk(
    s: Session,
    rel: string,
    prefix: string,
    walked: { linked: Set<string>; root?: string } = { linked: new Set() },
    /** The real path of `rel` once a link was followed to reach it; else root's + rel. */
    physical?: string,
  ): AsyncGenerator<ObjectInfo> {
    let entries: FileEntryWithStats[];
    try {
      entries = await call<FileEntryWithStats[]>((cb) => s.sftp.readdir(this.pathOf(rel), cb));
    } catch (e) {
      if (sftpCode(e) === FX_NO_SUCH_FILE) return;
      throw mapSftpError(e, 'list', rel ? `"${rel}/"` : 'the root folder', this.displayUrl);
    }
    for (const ent of entries) {
      if (ent.filename === '.' || ent.filename === '..') continue;
      const key = rel ? `${rel}/${ent.filename}` : ent.filename;
      let attrs = ent.attrs;
      let childPhysical = physical === undefined ? undefined : posix.join(physical, ent.filename);
      if (attrs.isSymbolicLink()) {
        const target = await call<Stats>((cb) => s.sftp.stat(this.pathOf(key), cb)).catch(() => undefined);
        if (!target) continue; // dangling
        attrs = target;
        if (attrs.isDirectory()) {
          const to = await call<string>((cb) => s.sftp.realpath(this.pathOf(key), cb));
          walked.root ??= await call<string>((cb) => s.sftp.realpath(this.pathOf(''), cb));
          const here = physical ?? posix.join(walked.root, rel);
          // a link to this folder or a parent is a loop; one walked already is a repeat
          if (walked.linked.has(to) || `${here}/`.startsWith(`${to}/`)) continue;
          walked.linked.add(to);
          childPhysical = to;
        }
      }
      if (attrs.isDirectory()) {
        if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) {
          yield* this.walk(s, key, prefix, walked, childPhysical);
        }
      } else if (attrs.isFile() && !isTempName(ent.filename) && key.startsWith(prefix)) {
        yield { key, size: attrs.size, lastModified: new Date(attrs.mtime * 1000) };
      }
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    try {
      const s = await this.conn();
      await call((cb) => s.sftp.unlink(this.pathOf(key), cb));
    } catch (e) {
      if (sftpCode(e) === FX_NO_SUCH_FILE) return;
      throw mapSftpError(e, 'delete', `"${key}"`, this.displayUrl);
    }
  }

  async removeEmptyDir(dir: string): Promise<void> {
    checkKey(dir);
    let s;
    try {
      s = await this.conn();
    } catch (e) {
      throw mapSftpError(e, 'delete', `"${dir}/"`, this.displayUrl);
    }
    // SSH_FXP_RMDIR only removes an empty directory; a non-empty or missing one is left as it is.
    const path = this.pathOf(dir);
    await call((cb) => s.sftp.rmdir(path, cb)).then(
      () => forgetDirs(s, path),
      () => undefined,
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    const pending = this.session;
    this.session = undefined;
    if (!pending) return;
    const s = await pending.catch(() => undefined);
    await s?.client.end().catch(() => undefined);
  }
}

/** Promisify one ssh2 callback call; extension methods may also throw synchronously. */
function call<T = void>(fn: (cb: (err: Error | undefined | null, value?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    try {
      fn((err, value) => (err ? reject(err) : resolve(value as T)));
    } catch (e) {
      reject(e);
    }
  });
}
