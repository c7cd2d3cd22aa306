import { constants as fsc } from 'node:fs';
import {
  link,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  rmdir,
  stat,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { ObjectInfo, PutOptions, Storage } from './storage';
import type { FsStorageConfig } from './storage-url';
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

type Op = StorageOp;
const VERB = OP_VERB;

/** Map a Node fs error to a typed one; the message names the object and the destination. */
export function mapFsError(e: unknown, op: Op, target: string, where: string): DbcrateError {
  if (e instanceof DbcrateError) return e;
  const code = (e as NodeJS.ErrnoException)?.code ?? '';
  const head = `cannot ${VERB[op]} ${target} in ${where}`;
  switch (code) {
    case 'ENOENT':
      return new DbcrateError(ErrorCodes.STORAGE_NOT_FOUND, `${head}: it does not exist`, { cause: e });
    case 'ENOTDIR':
      return new DbcrateError(
        ErrorCodes.STORAGE_DENIED,
        `${head}: a part of the path is a file, not a folder (ENOTDIR)`,
        {
          cause: e,
          hint: 'check the destination path',
        },
      );
    case 'EACCES':
    case 'EPERM':
      return new DbcrateError(ErrorCodes.STORAGE_DENIED, `${head}: permission denied (${code})`, {
        cause: e,
        hint: `make the folder ${op === 'read' || op === 'list' ? 'readable' : 'writable'} by the user running dbcrate (uid ${process.getuid?.() ?? '?'}), or choose another folder`,
      });
    case 'EROFS':
      return new DbcrateError(ErrorCodes.STORAGE_DENIED, `${head}: the file system is read-only (EROFS)`, {
        cause: e,
        hint: 'choose a folder on a writable file system',
      });
    case 'ENOSPC':
    case 'EDQUOT':
      return new DbcrateError(ErrorCodes.STORAGE_IO, `${head}: no space left (${code})`, {
        cause: e,
        hint: 'free space on the destination file system or choose another folder',
      });
    case 'EEXIST':
      return new DbcrateError(ErrorCodes.STORAGE_CONFLICT, `${head}: it already exists`, { cause: e });
    default:
      return new DbcrateError(ErrorCodes.STORAGE_IO, `${head}: ${causeText(e)}`, { cause: e });
  }
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  let off = 0;
  while (off < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

/**
 * A local folder. A put writes a hidden temp file beside the target, fsyncs it, renames it
 * into place (or hard-links it, which cannot overwrite, for ifNotExists) and fsyncs the
 * directory, so after `put` resolves the object survives a crash and before that no reader
 * sees a partial one.
 */
export class FsStorage implements Storage {
  readonly displayUrl: string;
  private readonly root: string;

  constructor(cfg: FsStorageConfig) {
    this.root = cfg.root;
    this.displayUrl = cfg.displayUrl;
  }

  private pathOf(key: string): string {
    return key === '' ? this.root : join(this.root, ...key.split('/'));
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<{ size: number }> {
    checkKey(key);
    const what = `upload of "${key}" to ${this.displayUrl}`;
    const final = this.pathOf(key);
    const dir = dirname(final);
    let tmp: string | undefined;
    let fh: FileHandle | undefined;
    try {
      if (opts.signal?.aborted) throw interrupted(what);
      await this.mkdirs(dir);
      // Early refusal saves writing the whole object only to find the name taken.
      if (opts.ifNotExists && (await this.exists(final))) throw this.conflict(key);
      tmp = join(dir, tempNameFor(baseName(key)));
      const name = tmp;
      fh = await open(name, 'wx', 0o600).catch(async (e: unknown) => {
        // Removed since (another writer's cleanup of an empty folder): make it again, once.
        if (errno(e) !== 'ENOENT') throw e;
        await this.mkdirs(dir);
        return open(name, 'wx', 0o600);
      });
      let size = 0;
      for await (const chunk of chunksOf(body, opts.signal, what)) {
        await writeAll(fh, chunk);
        size += chunk.length;
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      if (opts.signal?.aborted) throw interrupted(what);
      await opts.beforeCommit?.();
      if (opts.ifNotExists) await this.linkNoReplace(tmp, final, key);
      else await rename(tmp, final);
      tmp = undefined;
      await fsyncDir(dir);
      return { size };
    } catch (e) {
      discard(body);
      await fh?.close().catch(() => undefined);
      if (tmp) await unlink(tmp).catch(() => undefined);
      if (isSourceError(e)) throw e;
      throw mapFsError(e, 'write', `"${key}"`, this.displayUrl);
    }
  }

  /** link(2) fails with EEXIST instead of replacing, so two writers cannot both win. */
  private async linkNoReplace(tmp: string, final: string, key: string): Promise<void> {
    try {
      await link(tmp, final);
    } catch (e) {
      if (errno(e) === 'EEXIST') throw this.conflict(key);
      // File systems without hard links (FAT, some network mounts): check, then rename.
      // Not atomic against a concurrent writer of the same key, which dbcrate never runs.
      if (['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EMLINK'].includes(errno(e) ?? '')) {
        if (await this.exists(final)) throw this.conflict(key);
        await rename(tmp, final);
        return;
      }
      throw e;
    }
    await unlink(tmp);
  }

  private conflict(key: string): DbcrateError {
    return new DbcrateError(ErrorCodes.STORAGE_CONFLICT, `"${key}" already exists in ${this.displayUrl}`, {
      hint: 'objects are never overwritten; choose another name or delete the existing object first',
    });
  }

  private async exists(p: string): Promise<boolean> {
    try {
      await lstat(p);
      return true;
    } catch (e) {
      if (errno(e) === 'ENOENT') return false;
      throw e;
    }
  }

  /**
   * mkdir -p, then fsync the parent of every directory created so the new entries are
   * durable. Done one level at a time rather than with `mkdir({ recursive: true })`, which
   * loops forever where mkdir(2) says ENOENT under an existing parent (/proc, some FUSE
   * mounts), and whose errors cannot say which level failed.
   */
  private async mkdirs(dir: string): Promise<void> {
    const missing: string[] = [];
    for (let d = dir; ; d = dirname(d)) {
      try {
        const st = await stat(d);
        if (!st.isDirectory()) throw Object.assign(new Error(`${d} is not a folder`), { code: 'ENOTDIR' });
        break;
      } catch (e) {
        if (errno(e) !== 'ENOENT' || dirname(d) === d) throw this.mkdirError(e, d);
        missing.push(d);
      }
    }
    for (const d of missing.reverse()) {
      try {
        await mkdir(d);
      } catch (e) {
        if (errno(e) !== 'EEXIST') throw this.mkdirError(e, d);
        continue; // created by a concurrent writer
      }
      await fsyncDir(dirname(d));
    }
  }

  private mkdirError(e: unknown, dir: string): DbcrateError {
    const code = errno(e) ?? '';
    const why: Record<string, string> = {
      ENOENT: 'the file system does not allow creating it there (ENOENT)',
      ENOTDIR: 'a part of the path is a file, not a folder (ENOTDIR)',
      EACCES: `permission denied (EACCES) for uid ${process.getuid?.() ?? '?'}`,
      EPERM: `not permitted (EPERM) for uid ${process.getuid?.() ?? '?'}`,
      EROFS: 'the file system is read-only (EROFS)',
      ENOSPC: 'no space left (ENOSPC)',
      EDQUOT: 'disk quota exceeded (EDQUOT)',
    };
    return new DbcrateError(
      code === 'ENOSPC' || code === 'EDQUOT' ? ErrorCodes.STORAGE_IO : ErrorCodes.STORAGE_DENIED,
      `cannot create the folder ${dir} in ${this.displayUrl}: ${why[code] ?? causeText(e)}`,
      {
        cause: e,
        hint: 'choose a destination folder that exists or can be created, on a writable file system',
      },
    );
  }

  async get(key: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> {
    checkKey(key);
    try {
      const fh = await open(this.pathOf(key), 'r');
      const st = await fh.stat();
      if (!st.isFile()) {
        await fh.close();
        throw Object.assign(new Error('not a file'), { code: 'ENOENT' });
      }
      return fh.createReadStream({ signal: opts.signal });
    } catch (e) {
      throw mapFsError(e, 'read', `"${key}"`, this.displayUrl);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    checkKey(key);
    try {
      const st = await stat(this.pathOf(key));
      return st.isFile() ? { key, size: st.size, lastModified: st.mtime } : undefined;
    } catch (e) {
      if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return undefined;
      throw mapFsError(e, 'stat', `"${key}"`, this.displayUrl);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkPrefix(prefix);
    const start = prefix === '' || prefix.endsWith('/') ? prefix.replace(/\/$/, '') : dirName(prefix);
    yield* this.walk(start, prefix);
  }

  /**
   * Folders and files reached through symlinks are listed like real ones (a database folder
   * linked to another disk is a normal setup); a link loop is walked once.
   */
  private async *walk(rel: string, prefix: string, seen = new Set<string>()): AsyncGenerator<ObjectInfo> {
    let entries;
    try {
      const here = await stat(this.pathOf(rel));
      const id = `${here.dev}:${here.ino}`;
      if (seen.has(id)) return;
      seen.add(id);
      entries = await readdir(this.pathOf(rel), { withFileTypes: true });
    } catch (e) {
      if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return;
      throw mapFsError(e, 'list', rel ? `"${rel}/"` : 'the root folder', this.displayUrl);
    }
    for (const ent of entries) {
      const key = rel ? `${rel}/${ent.name}` : ent.name;
      let isDir = ent.isDirectory();
      let isFile = ent.isFile();
      if (ent.isSymbolicLink()) {
        const target = await stat(this.pathOf(key)).catch(() => undefined); // dangling: skip
        isDir = !!target?.isDirectory();
        isFile = !!target?.isFile();
      }
      if (isDir) {
        if (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* this.walk(key, prefix, seen);
      } else if (isFile && !isTempName(ent.name) && key.startsWith(prefix)) {
        try {
          const st = await stat(this.pathOf(key));
          yield { key, size: st.size, lastModified: st.mtime };
        } catch (e) {
          // Deleted between readdir and stat: it is simply gone.
          if (errno(e) !== 'ENOENT') throw mapFsError(e, 'list', `"${key}"`, this.displayUrl);
        }
      }
    }
  }

  async checkRoot(): Promise<void> {
    let st;
    try {
      st = await stat(this.root);
    } catch (e) {
      if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') {
        throw new DbcrateError(
          ErrorCodes.STORAGE_NOT_FOUND,
          `the folder ${this.root} of ${this.displayUrl} does not exist`,
          {
            hint: 'check the path (file:// URLs take an absolute path: file:///var/backups/dbcrate)',
          },
        );
      }
      throw mapFsError(e, 'list', 'the root folder', this.displayUrl);
    }
    if (!st.isDirectory()) {
      throw new DbcrateError(
        ErrorCodes.STORAGE_NOT_FOUND,
        `${this.root} of ${this.displayUrl} is a file, not a folder`,
        {
          hint: 'give the folder that holds the backups',
        },
      );
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    try {
      await unlink(this.pathOf(key));
    } catch (e) {
      if (errno(e) === 'ENOENT') return;
      throw mapFsError(e, 'delete', `"${key}"`, this.displayUrl);
    }
  }

  async removeEmptyDir(dir: string): Promise<void> {
    checkKey(dir);
    try {
      await rmdir(this.pathOf(dir)); // rmdir(2) only ever removes an empty directory
    } catch (e) {
      if (['ENOENT', 'ENOTEMPTY', 'EEXIST', 'ENOTDIR'].includes(errno(e) ?? '')) return;
      throw mapFsError(e, 'delete', `"${dir}/"`, this.displayUrl);
    }
  }

  async close(): Promise<void> {
    // Nothing held open between calls.
  }
}
