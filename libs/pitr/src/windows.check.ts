import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { TrustPolicy } from '@dbcrate/crypto';
import type { Storage } from '@dbcrate/storage';
import { listClusterIds, resolveClusterId } from './pitr.layout';
import { describeLiveBranches } from './timeline.branches';
import { restoreWindows, type DatabaseWindows } from './windows';

/** The restore windows of one cluster (`databaseId`) or of every cluster the destination holds. */
export async function archiveWindows(
  storage: Storage,
  o: { databaseId?: string; trust?: TrustPolicy },
): Promise<DatabaseWindows[]> {
  const ids = o.databaseId ? [await resolveClusterId(storage, o.databaseId)] : await listClusterIds(storage);
  const all: DatabaseWindows[] = [];
  for (const id of ids) all.push(await restoreWindows(storage, id, { trust: o.trust }));
  return all;
}

/**
 * What is wrong with an archive, as the error that says so, or undefined when nothing is:
 * a WAL gap (windows end before it) or WAL archived twice with different content come
 * first; two timelines growing at once (recovery then needs an explicit timeline) next.
 */
export function archiveProblem(all: DatabaseWindows[]): DbcrateError | undefined {
  const gaps = all.flatMap((d) =>
    d.timelines.flatMap((t) => t.gaps.map((g) => `${d.databaseId}: ${g.firstMissing}`)),
  );
  const conflicts = all.flatMap((d) => d.conflicts);
  if (gaps.length || conflicts.length) {
    return new DbcrateError(
      ErrorCodes.WAL_GAP,
      gaps.length
        ? `the WAL archive has a gap (${gaps.join(', ')}): restore windows end before it`
        : `WAL archived twice with different content: ${conflicts.join(', ')}`,
      {
        hint: 'take a new base backup now: recovery past a gap is impossible; then find why archiving lost WAL',
      },
    );
  }
  const d = all.find((w) => w.liveBranches.length);
  if (d) {
    return new DbcrateError(
      ErrorCodes.TIMELINE_BRANCHES,
      `${d.databaseId}: ${describeLiveBranches(d.liveBranches)}`,
      {
        hint: `recover needs an explicit --timeline (${[d.liveBranches[0].timeline, ...d.liveBranches.map((b) => b.other)].join(' or ')}); a recovered copy archiving here (recover --archive) makes such a branch`,
      },
    );
  }
  return undefined;
}
