import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import type { Storage } from '@dbcrate/storage';
import { walNameState } from './wal.claim';

export const DEFAULT_ARCHIVE_TIMEOUT = 60;

export function validateArchiveTimeout(seconds: number): number {
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 86400) {
    throw new DbcrateError(
      ErrorCodes.USAGE,
      `--archive-timeout must be a number of seconds between 1 and 86400, not ${seconds}`,
    );
  }
  return seconds;
}

/**
 * Wait until `walFile` has an archived copy in the destination itself: it proves the WAL
 * reached where recovery will read it, which waiting on the server's archiver does not.
 * Polls with backoff; a timeout means the backup cannot become consistent from this archive.
 */
export async function awaitArchivedWal(opts: {
  storage: Storage;
  databaseId: string;
  walFile: string;
  timeoutSeconds: number;
  signal?: AbortSignal;
}): Promise<void> {
  const deadline = Date.now() + opts.timeoutSeconds * 1000;
  let delay = 100;
  for (;;) {
    opts.signal?.throwIfAborted();
    const state = await walNameState(opts.storage, opts.databaseId, opts.walFile);
    if (state.objects.length > 0) return;
    const left = deadline - Date.now();
    if (left <= 0) break;
    logger().debug({ walFile: opts.walFile, retryMs: delay }, 'waiting for the stop WAL file in the archive');
    await new Promise<void>((resolve) => {
      const t = setTimeout(done, Math.min(delay, left));
      function done() {
        opts.signal?.removeEventListener('abort', done);
        clearTimeout(t);
        resolve();
      }
      opts.signal?.addEventListener('abort', done, { once: true });
    });
    delay = Math.min(delay * 2, 5000);
  }
  throw new DbcrateError(
    ErrorCodes.ARCHIVE_CHECK,
    `${opts.walFile}, the WAL file that ends this base backup, did not arrive in ${opts.storage.displayUrl} within ${opts.timeoutSeconds}s; nothing was kept`,
    {
      hint: "check the server's archive_command (and its log for failures) and run `dbcrate check`; raise --archive-timeout if the archiver is only slow",
    },
  );
}
