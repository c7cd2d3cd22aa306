import { createHash } from 'node:crypto';
import type { BaseManifest } from './base.manifest';
import { parseWalKey, walKey } from './pitr.layout';
import { DEFAULT_WAL_SEGMENT_SIZE, parseLsn, type TimelineHistoryEntry } from './wal.names';
import {
  backupOnPath,
  describeWindow,
  timelineForSegment,
  timelinePath,
  walReach,
  windowsFromIndex,
  type ArchivedWalFile,
  type WalIndex,
} from './windows';

const DB = '7441234567890123456';
const SEG = DEFAULT_WAL_SEGMENT_SIZE;

/** An archived WAL file as indexArchive would list it. */
function archived(name: string, lastModified?: Date): ArchivedWalFile {
  const sha = createHash('sha256').update(name).digest('hex');
  const p = parseWalKey(walKey(DB, name, sha));
  if (!p) throw new Error(`bad test WAL name ${name}`);
  return { ...p, lastModified };
}

/** Segment `n` (hex digits of the low part) of timeline `tli`, 16 MiB segments. */
function seg(tli: number, n: number): string {
  return `${tli.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;
}

/** Stored a minute apart per segment number, so lastModified tells which file was the last one. */
function storedAt(tli: number, n: number): Date {
  return new Date(Date.UTC(2026, 10, 25, 12, n, tli));
}

function makeIndex(
  names: string[],
  histories: Record<number, TimelineHistoryEntry[]> = {},
  conflicts: string[] = [],
): WalIndex {
  const files = new Map<string, ArchivedWalFile>();
  const timelines = new Set<number>();
  for (const n of names) {
    const f = archived(n, f2date(n));
    files.set(n, f);
    timelines.add(f.timeline);
  }
  for (const t of Object.keys(histories)) timelines.add(Number(t));
  return {
    databaseId: DB,
    segmentSize: SEG,
    files,
    conflicts,
    timelines: [...timelines].sort((a, b) => a - b),
    histories: new Map(Object.entries(histories).map(([k, v]) => [Number(k), v])),
  };
}

function f2date(name: string): Date | undefined {
  const p = parseWalKey(walKey(DB, name, '0'.repeat(64)));
  if (p?.kind !== 'segment' || !p.segmentName) return undefined;
  return storedAt(p.timeline, parseInt(p.segmentName.slice(16), 16));
}

function backup(
  f: Pick<BaseManifest, 'backupId' | 'timeline' | 'startLsn' | 'stopLsn' | 'startWalFile' | 'finishedAt'>,
): BaseManifest {
  return {
    ...f,
    stopWalFile: f.startWalFile,
    walSegmentSize: SEG,
    databaseId: DB,
  } as BaseManifest;
}

/** Timeline 2 forked off timeline 1 at 0/3000060, as PostgreSQL's 00000002.history says. */
const FORK: Record<number, TimelineHistoryEntry[]> = { 2: [{ timeline: 1, switchLsn: '0/3000060' }] };

/** On timeline 1, finished before the fork. */
const BEFORE_FORK = backup({
  backupId: '20261125T110000.000Z',
  timeline: 1,
  startLsn: '0/2000028',
  stopLsn: '0/2000100',
  startWalFile: seg(1, 2),
  finishedAt: '2026-11-25T11:00:05.000Z',
});
/** On timeline 1 too, but after the fork: the old primary kept writing timeline 1. */
const AFTER_FORK = backup({
  backupId: '20261125T130000.000Z',
  timeline: 1,
  startLsn: '0/5000028',
  stopLsn: '0/5000100',
  startWalFile: seg(1, 5),
  finishedAt: '2026-11-25T13:00:05.000Z',
});

describe('timelinePath', () => {
  it('a timeline without history stands alone from LSN 0', () => {
    expect(timelinePath(makeIndex([]), 1)).toEqual([{ timeline: 1, beginLsn: 0n }]);
  });

  it('follows the ancestry, oldest first, each stretch ending where the next begins', () => {
    const index = makeIndex([], {
      3: [
        { timeline: 1, switchLsn: '0/3000060' },
        { timeline: 2, switchLsn: '1/5000000' },
      ],
    });
    expect(timelinePath(index, 3)).toEqual([
      { timeline: 1, beginLsn: 0n, endLsn: 0x3000060n },
      { timeline: 2, beginLsn: 0x3000060n, endLsn: 0x1_05000000n },
      { timeline: 3, beginLsn: 0x1_05000000n },
    ]);
  });
});

describe('timelineForSegment', () => {
  const path = timelinePath(makeIndex([], FORK), 2);

  it('reads the segments before the switch from the parent timeline', () => {
    expect(timelineForSegment(path, 0n, SEG)).toBe(1);
    expect(timelineForSegment(path, 2n, SEG)).toBe(1);
  });

  it('reads the switch segment from the new timeline', () => {
    expect(timelineForSegment(path, 3n, SEG)).toBe(2);
    expect(timelineForSegment(path, 4n, SEG)).toBe(2);
  });

  it('a switch exactly on a segment boundary leaves the previous segment on the parent', () => {
    const p = timelinePath(makeIndex([], { 2: [{ timeline: 1, switchLsn: '0/4000000' }] }), 2);
    expect(timelineForSegment(p, 3n, SEG)).toBe(1);
    expect(timelineForSegment(p, 4n, SEG)).toBe(2);
  });
});

describe('backupOnPath', () => {
  const path2 = timelinePath(makeIndex([], FORK), 2);
  const path1 = timelinePath(makeIndex([], FORK), 1);

  it('a backup that finished before the fork can recover onto the child timeline', () => {
    expect(backupOnPath(BEFORE_FORK, path2)).toBe(true);
  });

  it('a backup of the parent taken after the fork cannot', () => {
    expect(backupOnPath(AFTER_FORK, path2)).toBe(false);
    expect(backupOnPath(AFTER_FORK, path1)).toBe(true);
  });

  it('a backup that stops exactly at the switch point is still on the path', () => {
    expect(backupOnPath({ ...BEFORE_FORK, stopLsn: '0/3000060' }, path2)).toBe(true);
    expect(backupOnPath({ ...BEFORE_FORK, stopLsn: '0/3000061' }, path2)).toBe(false);
  });

  it('a backup on a timeline that is not an ancestor is not', () => {
    expect(backupOnPath({ ...BEFORE_FORK, timeline: 2 }, path1)).toBe(false);
    expect(backupOnPath({ ...BEFORE_FORK, timeline: 3 }, path2)).toBe(false);
  });
});

describe('walReach', () => {
  const path1 = [{ timeline: 1, beginLsn: 0n }];

  it('a contiguous run ends after its last segment', () => {
    const index = makeIndex([1, 2, 3, 4, 5].map((n) => seg(1, n)));
    const r = walReach(index, path1, 2n);
    expect(r.endLsn).toBe(parseLsn('0/6000000'));
    expect(r.lastFile?.name).toBe(seg(1, 5));
    expect(r.lastFile?.lastModified).toEqual(storedAt(1, 5));
    expect(r.gaps).toEqual([]);
  });

  it('a gap in the middle ends the window at the gap and is reported', () => {
    const index = makeIndex([2, 3, 5, 6, 9].map((n) => seg(1, n)));
    const r = walReach(index, path1, 2n);
    expect(r.endLsn).toBe(parseLsn('0/4000000'));
    expect(r.lastFile?.name).toBe(seg(1, 3));
    expect(r.gaps[0].firstMissing).toBe(seg(1, 4));
    expect(r.gaps).toEqual([
      { timeline: 1, firstMissing: seg(1, 4), missing: 1, resumesAt: seg(1, 5) },
      { timeline: 1, firstMissing: seg(1, 7), missing: 2, resumesAt: seg(1, 9) },
    ]);
  });

  it('a missing start segment gives an empty reach', () => {
    const r = walReach(makeIndex([3, 4].map((n) => seg(1, n))), path1, 2n);
    expect(r.endLsn).toBe(parseLsn('0/2000000'));
    expect(r.lastFile).toBeUndefined();
    expect(r.gaps).toEqual([{ timeline: 1, firstMissing: seg(1, 2), missing: 1, resumesAt: seg(1, 3) }]);
  });

  it('no WAL at all: the reach ends where it starts, without gaps', () => {
    const r = walReach(makeIndex([]), path1, 2n);
    expect(r.endLsn).toBe(parseLsn('0/2000000'));
    expect(r.lastFile).toBeUndefined();
    expect(r.gaps).toEqual([]);
  });

  it('ignores .partial, .backup and history files and other timelines', () => {
    const index = makeIndex([
      seg(1, 2),
      `${seg(1, 3)}.partial`,
      `${seg(1, 2)}.00000028.backup`,
      '00000002.history',
      seg(2, 3),
    ]);
    const r = walReach(index, path1, 2n);
    expect(r.endLsn).toBe(parseLsn('0/3000000'));
    expect(r.gaps).toEqual([]);
  });

  it('crosses a timeline switch, taking the switch segment from the new timeline', () => {
    // timeline 1 went on to segment 6 (the old primary kept writing); those must not count for timeline 2
    const index = makeIndex(
      [...[1, 2, 3, 4, 5, 6].map((n) => seg(1, n)), ...[3, 4].map((n) => seg(2, n))],
      FORK,
    );
    const r = walReach(index, timelinePath(index, 2), 2n);
    expect(r.endLsn).toBe(parseLsn('0/5000000'));
    expect(r.lastFile?.name).toBe(seg(2, 4));
    expect(r.gaps).toEqual([]);
  });

  it('the parent copy of the switch segment does not fill in for the missing new one', () => {
    const index = makeIndex([...[2, 3].map((n) => seg(1, n)), ...[4, 5].map((n) => seg(2, n))], FORK);
    const r = walReach(index, timelinePath(index, 2), 2n);
    expect(r.endLsn).toBe(parseLsn('0/3000000'));
    expect(r.gaps).toEqual([{ timeline: 2, firstMissing: seg(2, 3), missing: 1, resumesAt: seg(2, 4) }]);
  });
});

describe('windowsFromIndex', () => {
  // Timeline 1: segments 1-7. Timeline 2 forked at 0/3000060 and has segments 3-5.
  const wal = [...[1, 2, 3, 4, 5, 6, 7].map((n) => seg(1, n)), ...[3, 4, 5].map((n) => seg(2, n))];

  it('two timelines, a backup before the fork and one after it on timeline 1', () => {
    const index = makeIndex(wal, FORK, ['000000010000000000000009']);
    const w = windowsFromIndex(index, [BEFORE_FORK, AFTER_FORK]);
    expect(w.databaseId).toBe(DB);
    expect(w.unreachable).toEqual([]);
    expect(w.conflicts).toEqual(['000000010000000000000009']);
    expect(w.baseBackups).toHaveLength(2);
    expect(w.timelines).toEqual([
      {
        timeline: 1,
        from: { lsn: '0/2000100', time: BEFORE_FORK.finishedAt, backupId: BEFORE_FORK.backupId },
        to: { lsn: '0/8000000', time: storedAt(1, 7).toISOString(), walFile: seg(1, 7) },
        gaps: [],
      },
      {
        timeline: 2,
        from: { lsn: '0/2000100', time: BEFORE_FORK.finishedAt, backupId: BEFORE_FORK.backupId },
        to: { lsn: '0/6000000', time: storedAt(2, 5).toISOString(), walFile: seg(2, 5) },
        gaps: [],
      },
    ]);
    expect(describeWindow(w.timelines[1])).toBe(
      `recoverable from ${BEFORE_FORK.finishedAt} (0/2000100, base backup ${BEFORE_FORK.backupId}) ` +
        `to ${storedAt(2, 5).toISOString()} (0/6000000) on timeline 2`,
    );
  });

  it('with only the backup taken after the fork, timeline 2 is unreachable', () => {
    const w = windowsFromIndex(makeIndex(wal, FORK), [AFTER_FORK]);
    expect(w.unreachable).toEqual([2]);
    expect(w.timelines.map((t) => t.timeline)).toEqual([1]);
    expect(w.timelines[0].from.backupId).toBe(AFTER_FORK.backupId);
    expect(w.timelines[0].to.lsn).toBe('0/8000000');
  });

  it('no base backup: every timeline is unreachable', () => {
    const w = windowsFromIndex(makeIndex(wal, FORK), []);
    expect(w.timelines).toEqual([]);
    expect(w.unreachable).toEqual([1, 2]);
  });

  it('reports the gap of a timeline and ends its window there', () => {
    const index = makeIndex(
      wal.filter((n) => n !== seg(1, 5)),
      FORK,
    );
    const w = windowsFromIndex(index, [BEFORE_FORK]);
    const t1 = w.timelines.find((t) => t.timeline === 1)!;
    expect(t1.to).toEqual({ lsn: '0/5000000', time: storedAt(1, 4).toISOString(), walFile: seg(1, 4) });
    expect(t1.gaps).toEqual([{ timeline: 1, firstMissing: seg(1, 5), missing: 1, resumesAt: seg(1, 6) }]);
    // timeline 2 does not need timeline 1's segment 5
    expect(w.timelines.find((t) => t.timeline === 2)!.gaps).toEqual([]);
  });

  // The window starts at the oldest backup on the path even when that backup's own WAL
  // is not archived (e.g. deleted), although a newer backup has all of its WAL:
  // `dbcrate windows` then shows a window that ends before it begins.
  it('starts the window at the oldest backup whose WAL is archived', () => {
    const index = makeIndex([5, 6, 7, 8].map((n) => seg(1, n)));
    const w = windowsFromIndex(index, [BEFORE_FORK, AFTER_FORK]);
    expect(w.timelines).toHaveLength(1);
    expect(w.timelines[0].from.backupId).toBe(AFTER_FORK.backupId);
    expect(w.timelines[0].to.lsn).toBe('0/9000000');
  });

  it('never reports a window that ends before it begins', () => {
    const w = windowsFromIndex(makeIndex([]), [BEFORE_FORK]);
    for (const t of w.timelines) expect(parseLsn(t.to.lsn)).toBeGreaterThan(parseLsn(t.from.lsn));
    expect(w.timelines.length + w.unreachable.length).toBe(1);
  });
});
