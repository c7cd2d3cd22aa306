import { stat } from 'node:fs/promises';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { KeyProvider } from '@dbcrate/crypto';
import type { Storage } from '@dbcrate/storage';
import { resolveClusterId } from './pitr.layout';
import { walNameState } from './wal.claim';
import { fetchWal, followingSegments, prefetchInto, PrefetchSpool, segmentSizeOfLength } from './wal.fetch';
import { requireWalFileName } from './wal.names';
import { writeAtomically } from './wal.write';

export interface RestoreWalFileOptions {
  /** The WAL file PostgreSQL asks for (%f). */
  walFile: string;
  /** Where to write it (%p, resolved). */
  dest: string;
  /** The data directory being recovered (its pg_wal holds the prefetch spool). */
  pgdata: string;
  /** Opens the destination, only when the spool does not hold the file; closed here. */
  openStorage: () => Promise<Storage>;
  /** Which cluster, when the destination holds several. */
  databaseId?: string;
  keys: KeyProvider;
  /** Following segments to fetch ahead while PostgreSQL replays this one (0: none). */
  prefetch: number;
  /** The WAL segment size, when known (else the restored segment's length tells). */
  walSegmentSize?: number;
  /**
   * Fetch the following segments into the spool, in the background, unless a prefetcher is
   * already at it (the CLI starts a detached copy of itself; a daemon fetches in-process).
   */
  startPrefetch: (walSegmentSize: number | undefined) => void;
}

/**
 * restore_command's work: the file from the prefetch spool if it is there, else from the
 * archive (decrypted, its signature checked), written atomically; then the spool pruned of
 * what replay has passed and the next segments fetched ahead.
 */
export async function restoreWalFile(o: RestoreWalFileOptions): Promise<{ fromSpool: boolean }> {
  requireWalFileName(o.walFile);
  const spool = new PrefetchSpool(o.pgdata);
  const hit = await spool.take(o.walFile, o.dest);
  if (!hit) {
    const storage = await o.openStorage();
    try {
      const databaseId = await resolveClusterId(storage, o.databaseId);
      // "Not in the archive" is the common answer for history files PostgreSQL probes for:
      // give it before paying for unlocking the private key.
      const found = await walNameState(storage, databaseId, o.walFile);
      if (found.objects.length === 0 && found.empty.length === 0) {
        throw new DbcrateError(
          ErrorCodes.WAL_NOT_FOUND,
          `${o.walFile} is not in the archive ${storage.displayUrl}`,
        );
      }
      const trust = await o.keys.trust();
      const keys = await o.keys.decryptionKeys();
      await writeAtomically(o.dest, await fetchWal({ storage, databaseId, keys, trust }, o.walFile));
    } finally {
      await storage.close();
    }
  }
  // The segment size is the restored segment's length (not always 16 MiB: initdb --wal-segsize).
  const segSize = o.walSegmentSize ?? segmentSizeOfLength((await stat(o.dest)).size);
  const following = followingSegments(o.walFile, o.prefetch, segSize);
  if (following.length > 0) {
    await spool.prune(o.walFile, segSize);
    if (!spool.locked()) o.startPrefetch(segSize);
  }
  return { fromSpool: hit };
}

/**
 * The prefetcher: fetch the `prefetch` segments after `walFile` into the spool, `parallel`
 * at a time, unless another prefetcher holds the spool. Returns how many it fetched.
 */
export async function prefetchWalFiles(o: {
  walFile: string;
  pgdata: string;
  openStorage: () => Promise<Storage>;
  databaseId?: string;
  keys: KeyProvider;
  prefetch: number;
  parallel: number;
  walSegmentSize?: number;
}): Promise<number> {
  const following = followingSegments(o.walFile, o.prefetch, o.walSegmentSize);
  const spool = new PrefetchSpool(o.pgdata);
  if (!spool.tryLock()) return 0;
  try {
    const trust = await o.keys.trust();
    const keys = await o.keys.decryptionKeys();
    const storage = await o.openStorage();
    try {
      // recover writes --database-id into restore_command; by hand, the destination's only cluster will do.
      const databaseId = await resolveClusterId(storage, o.databaseId);
      return await prefetchInto(spool, { storage, databaseId, keys, trust }, following, o.parallel);
    } finally {
      await storage.close();
    }
  } finally {
    await spool.unlock();
  }
}
