import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { lchown, lstat, mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import type { DecryptionKey, TrustPolicy } from '@dbcrate/crypto';
import { readObject, type Storage } from '@dbcrate/storage';
import { openWal, sha256Hex } from './wal.archive';
import type { WalLayout } from './pitr.layout';
import { removeTree } from './tree.remove';
import { writeAtomically } from './wal.write';
import { walNameState } from './wal.claim';
import {
  DEFAULT_WAL_SEGMENT_SIZE,
  parseWalFileName,
  requireWalFileName,
  segmentNumber,
  walFileName,
} from './wal.names';

export interface WalFetchOptions {
  storage: Storage;
  databaseId: string;
  keys: DecryptionKey[];
  /** Check the signature inside each object (signer, database id, file name); the CLI always gives one. */
  trust?: TrustPolicy;
  signal?: AbortSignal;
  /** The archive's WAL layout (cluster.json formatVersion), when known: one listing instead of two. */
  layout?: WalLayout;
}

/** Download, decrypt, decompress and check one WAL file; E_WAL_NOT_FOUND when it is not archived. */
export async function fetchWal(opts: WalFetchOptions, walFile: string): Promise<Buffer> {
  requireWalFileName(walFile);
  const state = await walNameState(opts.storage, opts.databaseId, walFile, opts.layout);
  const found = state.objects;
  if (found.length === 0 && state.empty.length > 0) {
    // Not "not archived" (exit 1 would end recovery here as if the WAL ended): damaged.
    throw new DbcrateError(ErrorCodes.INTEGRITY, `${walFile} is archived only as an empty object`, {
      hint: `the object ${state.empty[0].key} is damaged; recovery cannot go past this WAL file`,
    });
  }
  if (found.length === 0) {
    throw new DbcrateError(
      ErrorCodes.WAL_NOT_FOUND,
      `${walFile} is not in the archive ${opts.storage.displayUrl}`,
    );
  }
  if (new Set(found.map((f) => f.sha256)).size > 1) {
    throw new DbcrateError(
      ErrorCodes.WAL_CONFLICT,
      `${walFile} is archived more than once with different content`,
      {
        hint: `two servers archived to database id "${opts.databaseId}"; keep the right object (${found.map((f) => f.key).join(', ')}) and delete the other`,
      },
    );
  }
  return fetchWalObject(opts, walFile, found[0].key, found[0].sha256);
}

/** Get one archived object by key, decrypt, decompress, and check it against the sha256 in its name. */
export async function fetchWalObject(
  opts: WalFetchOptions,
  walFile: string,
  key: string,
  sha256: string,
): Promise<Buffer> {
  const stored = await readObject(opts.storage, key, { signal: opts.signal });
  const plain = await openWal(
    stored,
    opts.keys,
    opts.trust ? { trust: opts.trust, databaseId: opts.databaseId, walFile } : undefined,
  );
  if (sha256Hex(plain) !== sha256) {
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      `${walFile}: decrypted content does not match the sha256 in its name`,
      {
        hint: `the object ${key} is damaged; recovery cannot go past this WAL file`,
      },
    );
  }
  return plain;
}

export { writeAtomically } from './wal.write';

export const PREFETCH_DIR = join('pg_wal', 'dbcrate-prefetch');
const LOCK_FILE = '.prefetch.lock';

/**
 * The prefetch spool: a private directory inside pg_wal that holds verified, decrypted
 * WAL files fetched ahead. A file appears under its WAL name only once complete.
 */
export class PrefetchSpool {
  readonly dir: string;
  private made = false;

  /** `dir`: somewhere else than pg_wal (recover as root keeps it under a root-owned parent). */
  constructor(pgdata: string, dir?: string) {
    this.dir = dir ?? join(pgdata, PREFETCH_DIR);
  }

  /** Move a prefetched file into place; false when it is not in the spool. */
  async take(walFile: string, dest: string): Promise<boolean> {
    try {
      await rename(join(this.dir, walFile), dest);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  async has(walFile: string): Promise<boolean> {
    return stat(join(this.dir, walFile)).then(
      () => true,
      () => false,
    );
  }

  async put(walFile: string, data: Uint8Array, owner?: { uid: number; gid: number }): Promise<void> {
    if (!this.made) await this.make(owner);
    try {
      await writeAtomically(join(this.dir, walFile), data, owner);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      // The spool was removed under us (cleared, or recovery ended): make it again.
      await this.make(owner);
      await writeAtomically(join(this.dir, walFile), data, owner);
    }
  }

  private async make(owner?: { uid: number; gid: number }): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    if (owner) {
      // chown follows links: never hand whatever a planted link points to to the server's user.
      if (!(await lstat(this.dir)).isDirectory())
        throw new DbcrateError(ErrorCodes.RECOVERY_FAILED, `${this.dir} is not a directory (a symlink?)`);
      await lchown(this.dir, owner.uid, owner.gid);
    }
    this.made = true;
  }

  /** Drop what recovery has gone past (older segments of any timeline) and leftovers. */
  async prune(current: string, segSize = DEFAULT_WAL_SEGMENT_SIZE): Promise<void> {
    const cur = parseWalFileName(current);
    if (!cur?.segmentName) return;
    const seg = segmentNumber(cur.segmentName, segSize);
    for (const f of await readdir(this.dir).catch(() => [] as string[])) {
      const p = parseWalFileName(f);
      if (f.endsWith('.dbcrate-tmp') || (p?.segmentName && segmentNumber(p.segmentName, segSize) <= seg)) {
        await rm(join(this.dir, f), { force: true });
      }
    }
  }

  async clear(): Promise<void> {
    this.made = false;
    await removeTree(this.dir);
  }

  /** One prefetcher at a time: an exclusive lock file holding its pid. */
  tryLock(): boolean {
    const path = join(this.dir, LOCK_FILE);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o600);
        writeSync(fd, String(process.pid));
        closeSync(fd);
        return true;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const pid = Number(readFileSync(path, 'utf8') || '0');
        if (pid && isAlive(pid)) return false;
        rmSync(path, { force: true }); // left by a prefetcher that died
      }
    }
    return false;
  }

  locked(): boolean {
    try {
      const pid = Number(readFileSync(join(this.dir, LOCK_FILE), 'utf8') || '0');
      return pid > 0 && isAlive(pid);
    } catch {
      return false;
    }
  }

  async unlock(): Promise<void> {
    await rm(join(this.dir, LOCK_FILE), { force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The segments after `walFile` on its timeline, for prefetch. */
export function followingSegments(
  walFile: string,
  count: number,
  segSize = DEFAULT_WAL_SEGMENT_SIZE,
): string[] {
  const p = parseWalFileName(walFile);
  if (p?.kind !== 'segment' || !p.segmentName) return [];
  const seg = segmentNumber(p.segmentName, segSize);
  return Array.from({ length: count }, (_, i) => walFileName(p.timeline, seg + BigInt(i + 1), segSize));
}

/** The segment size a restored segment shows (its length), when it is a valid one. */
export function segmentSizeOfLength(bytes: number): number | undefined {
  const valid = bytes >= 1 << 20 && bytes <= 1 << 30 && (bytes & (bytes - 1)) === 0;
  return valid ? bytes : undefined;
}

/**
 * Fetch `names` into the spool, `parallel` at a time, stopping at the first one that is
 * not archived (the end of the archive, or a timeline switch).
 */
export async function prefetchInto(
  spool: PrefetchSpool,
  opts: WalFetchOptions,
  names: string[],
  parallel: number,
): Promise<number> {
  let next = 0;
  let stop = false;
  let fetched = 0;
  const worker = async () => {
    while (!stop && next < names.length) {
      const name = names[next++];
      if (await spool.has(name)) continue;
      try {
        await spool.put(name, await fetchWal(opts, name));
        fetched++;
      } catch (e) {
        stop = true;
        if ((e as { code?: string }).code !== ErrorCodes.WAL_NOT_FOUND) {
          logger().warn(
            { walFile: name, err: (e as Error).message },
            'prefetch failed; wal-fetch will fetch it directly',
          );
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, parallel) }, worker));
  return fetched;
}
