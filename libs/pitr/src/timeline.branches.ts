import { historyFileName, parseLsn, segmentNumber, segmentOfLsn } from './wal.names';
import { timelineForSegment, timelinePath, type WalIndex } from './windows';

/** WAL of another timeline stored after `timeline` forked: that timeline kept growing too. */
export interface LiveBranch {
  /** The timeline of a fork on the path --timeline latest follows, and where it forked from its parent. */
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
 * Timelines that kept growing after a fork on `timeline`'s path: for each fork (a child
 * timeline's history file stored), WAL of an older timeline, not on the path, stored later.
 * A recovered copy promoted and archiving into production's archive gives exactly that, and
 * following the newest timeline then lands on the copy. Every fork counts, not only the
 * newest: in 1 → 2 → 3, timeline 1 growing after 2 forked is lost on 3's path as well.
 * A `.partial` counts too (an old primary promoted away from can leave only that), except
 * the parent's segment at the fork point, which the promotion itself archives.
 */
export function liveBranches(index: WalIndex, timeline: number): LiveBranch[] {
  const history = index.histories.get(timeline);
  if (!history?.length) return [];
  const path = timelinePath(index, timeline);
  const found = new Map<string, LiveBranch & { stored: Date }>();
  history.forEach((h, i) => {
    const child = history[i + 1]?.timeline ?? timeline;
    const forkedAt = index.files.get(historyFileName(child))?.lastModified;
    if (!forkedAt) return;
    const forkSeg = segmentOfLsn(parseLsn(h.switchLsn), index.segmentSize);
    for (const f of index.files.values()) {
      if (f.kind !== 'segment' && f.kind !== 'backup' && f.kind !== 'partial') continue;
      if (!f.segmentName || f.timeline >= child) continue;
      if (!f.lastModified || f.lastModified <= forkedAt) continue;
      const seg = segmentNumber(f.segmentName, index.segmentSize);
      if (f.kind === 'partial' && f.timeline === h.timeline && seg === forkSeg) continue;
      // Late archiving of WAL from before the fork (read by this path) is the same history, not a branch.
      if (timelineForSegment(path, seg, index.segmentSize) === f.timeline) continue;
      const k = `${child}:${f.timeline}`;
      const prev = found.get(k);
      if (!prev || f.lastModified > prev.stored) {
        found.set(k, {
          timeline: child,
          parent: h.timeline,
          forkLsn: h.switchLsn,
          forkedAt: forkedAt.toISOString(),
          other: f.timeline,
          walFile: f.name,
          storedAt: f.lastModified.toISOString(),
          stored: f.lastModified,
        });
      }
    }
  });
  return [...found.values()]
    .sort((a, b) => b.timeline - a.timeline || a.other - b.other)
    .map(({ stored: _stored, ...b }) => b);
}

export function describeLiveBranches(branches: LiveBranch[]): string {
  if (branches.length === 0) return '';
  return branches
    .map(
      (b) =>
        `two live branches: timeline ${b.timeline} (forked from timeline ${b.parent} at ${b.forkLsn}, ${b.forkedAt}) ` +
        `and timeline ${b.other} (still written after the fork: ${b.walFile} stored ${b.storedAt})`,
    )
    .join('; ');
}
