import { logger } from '@dbcrate/core';
import { fetchWalObject, type WalFetchOptions } from './wal.fetch';
import { historyFileName, parseTimelineHistory } from './wal.names';
import type { WalIndex } from './windows';

/**
 * Replace the ancestry read from `timelines/<TLI>.json` (plaintext, unsigned: anyone who can
 * write to the bucket can change it) with that of the archived `.history` files, whose
 * signatures are checked as for any WAL file. The planner's choice of timeline, its check for
 * live branches and for gaps then rest on what PostgreSQL will replay. A timeline whose
 * `.history` file is not archived has no known ancestry (PostgreSQL cannot follow it either).
 */
export async function useSignedHistories(index: WalIndex, fetch: WalFetchOptions): Promise<void> {
  for (const tli of index.timelines) {
    if (tli < 2) continue;
    const name = historyFileName(tli);
    const f = index.files.get(name);
    if (!f) {
      index.histories.delete(tli);
      continue;
    }
    const text = (await fetchWalObject(fetch, name, f.key, f.sha256)).toString('utf8');
    const signed = parseTimelineHistory(text);
    const listed = index.histories.get(tli);
    if (listed && JSON.stringify(listed) !== JSON.stringify(signed)) {
      logger().warn(
        { timeline: tli, listed, archived: signed },
        `the timeline summary ${tli.toString(16).toUpperCase().padStart(8, '0')}.json disagrees with ${name}; using ${name}`,
      );
    }
    index.histories.set(tli, signed);
  }
}
