import { historyFileName, segmentNumber } from './wal.names';
import { timelineForSegment, timelinePath, type WalIndex } from './windows';

/** WAL of another timeline stored after `timeline` forked: that timeline kept growing too. */
export interface LiveBranch {
  /** The newer timeline (what --timeline latest follows) and where it forked. */
  timeline: number;
  parent: number;
  forkLsn: string;
  forkedAt: string;
  /** The other timeline, still written after the fork, and its newest such WAL file. */
  other: number;
  walFile: string;
  storedAt: string;
}

/**
 * Timelines that kept growing after `timeline` was created (its history file stored): a
 * segment or backup label of another timeline, not on `timeline`'s path, stored later. A
 * recovered copy promoted and archiving into production's archive gives exactly that, and
 * following the newest timeline then lands on the copy. `.partial` files are left out: a
 * promoted server archives its parent's last segment as .partial after the history file.
 */
export function liveBranches(index: WalIndex, timeline: number): LiveBranch[] {
  const history = index.histories.get(timeline);
  const forkedAt = index.files.get(historyFileName(timeline))?.lastModified;
  if (!history?.length || !forkedAt) return [];
  const path = timelinePath(index, timeline);
  const newest = new Map<number, { walFile: string; storedAt: Date }>();
  for (const f of index.files.values()) {
    if ((f.kind !== 'segment' && f.kind !== 'backup') || !f.segmentName || f.timeline === timeline) continue;
    if (!f.lastModified || f.lastModified <= forkedAt) continue;
    const seg = segmentNumber(f.segmentName, index.segmentSize);
    // Late archiving of WAL from before the fork (read by this path) is the same history, not a branch.
    if (timelineForSegment(path, seg, index.segmentSize) === f.timeline) continue;
    const prev = newest.get(f.timeline);
    if (!prev || f.lastModified > prev.storedAt)
      newest.set(f.timeline, { walFile: f.name, storedAt: f.lastModified });
  }
  const parent = history[history.length - 1];
  return [...newest.entries()]
    .sort(([a], [b]) => a - b)
    .map(([other, w]) => ({
      timeline,
      parent: parent.timeline,
      forkLsn: parent.switchLsn,
      forkedAt: forkedAt.toISOString(),
      other,
      walFile: w.walFile,
      storedAt: w.storedAt.toISOString(),
    }));
}

export function describeLiveBranches(branches: LiveBranch[]): string {
  if (branches.length === 0) return '';
  const b = branches[0];
  const others = branches
    .map((x) => `timeline ${x.other} (still written after the fork: ${x.walFile} stored ${x.storedAt})`)
    .join(', ');
  return (
    `two live branches: timeline ${b.timeline} (forked from timeline ${b.parent} at ${b.forkLsn}, ${b.forkedAt}) ` +
    `and ${others}`
  );
}
