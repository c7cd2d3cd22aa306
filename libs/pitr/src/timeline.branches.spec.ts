import { createHash } from 'node:crypto';
import { DbcrateError, ErrorCodes, ExitCodes } from '@dbcrate/core';
import type { BaseManifest } from './base.manifest';
import { parseWalKey, walKey } from './pitr.layout';
import { planFromIndex } from './recover';
import { describeLiveBranches, liveBranches } from './timeline.branches';
import { DEFAULT_WAL_SEGMENT_SIZE, type TimelineHistoryEntry } from './wal.names';
import { windowsFromIndex, type ArchivedWalFile, type WalIndex } from './windows';

const DB = '7441234567890123456';
const SEG = DEFAULT_WAL_SEGMENT_SIZE;
const seg = (tli: number, n: number) =>
  `${tli.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;
const at = (minute: number) => new Date(Date.UTC(2026, 10, 25, 12, minute));

/** Files with the minute they were stored. */
function makeIndex(
  files: Array<[string, number]>,
  histories: Record<number, TimelineHistoryEntry[]>,
): WalIndex {
  const map = new Map<string, ArchivedWalFile>();
  const timelines = new Set<number>();
  for (const [n, minute] of files) {
    const p = parseWalKey(walKey(DB, n, createHash('sha256').update(n).digest('hex')))!;
    map.set(n, { ...p, lastModified: at(minute) });
    timelines.add(p.timeline);
  }
  return {
    databaseId: DB,
    segmentSize: SEG,
    files: map,
    conflicts: [],
    timelines: [...timelines].sort((a, b) => a - b),
    histories: new Map(Object.entries(histories).map(([k, v]) => [Number(k), v])),
  };
}

const FORK = { 2: [{ timeline: 1, switchLsn: '0/4000060' }] };
/** Production on timeline 1 up to segment 3, a copy forked at 0/4000060 (history stored at minute 10). */
const BASE: Array<[string, number]> = [
  [seg(1, 2), 1],
  [seg(1, 3), 2],
  ['00000002.history', 10],
  [`${seg(1, 4)}.partial`, 11],
  [seg(2, 4), 12],
  [seg(2, 5), 13],
];
const BACKUP = {
  backupId: '20261125T110000.000Z',
  timeline: 1,
  startLsn: '0/2000028',
  stopLsn: '0/2000100',
  startWalFile: seg(1, 2),
  stopWalFile: seg(1, 2),
  finishedAt: '2026-11-25T11:00:05.000Z',
  walSegmentSize: SEG,
  databaseId: DB,
} as BaseManifest;

describe('liveBranches', () => {
  it('an abandoned parent (all its WAL stored before the fork) is not a live branch', () => {
    // the usual PITR: timeline 1 went on past the fork point, but before the fork was made
    const index = makeIndex([...BASE, [seg(1, 4), 5], [seg(1, 5), 6]], FORK);
    expect(liveBranches(index, 2)).toEqual([]);
  });

  it('the .partial a promoted copy archives after its history file does not count', () => {
    expect(liveBranches(makeIndex(BASE, FORK), 2)).toEqual([]);
  });

  it('a parent that kept archiving after the fork is a live branch', () => {
    const index = makeIndex([...BASE, [seg(1, 4), 20], [seg(1, 5), 21]], FORK);
    const live = liveBranches(index, 2);
    expect(live).toEqual([
      {
        timeline: 2,
        parent: 1,
        forkLsn: '0/4000060',
        forkedAt: at(10).toISOString(),
        other: 1,
        walFile: seg(1, 5),
        storedAt: at(21).toISOString(),
      },
    ]);
    expect(describeLiveBranches(live)).toMatch(/two live branches: timeline 2 .* and timeline 1 /);
  });

  it('WAL from before the fork archived late is the same history, not a branch', () => {
    const index = makeIndex([...BASE.filter(([n]) => n !== seg(1, 3)), [seg(1, 3), 30]], FORK);
    expect(liveBranches(index, 2)).toEqual([]);
  });

  it('a timeline without history (or whose history file is not archived) has no fork to check', () => {
    expect(liveBranches(makeIndex(BASE, FORK), 1)).toEqual([]);
    const noHistoryObject = makeIndex(
      BASE.filter(([n]) => !n.endsWith('.history')).concat([[seg(1, 4), 20]]),
      FORK,
    );
    expect(liveBranches(noHistoryObject, 2)).toEqual([]);
  });
});

describe('recover and windows with two live branches', () => {
  const index = makeIndex([...BASE, [seg(1, 4), 20], [seg(1, 5), 21]], FORK);

  it('--timeline latest is refused (exit 7) naming both branches; nothing is planned', () => {
    let err: DbcrateError | undefined;
    try {
      planFromIndex(index, [BACKUP], { databaseId: DB, target: { kind: 'latest' }, timeline: 'latest' });
    } catch (e) {
      err = e as DbcrateError;
    }
    expect(err?.code).toBe(ErrorCodes.TIMELINE_BRANCHES);
    expect(ExitCodes[err!.code]).toBe(7);
    expect(err!.message).toMatch(/timeline 2 .*timeline 1/);
    expect(err!.hint).toMatch(/--timeline 2 or --timeline 1/);
  });

  it('an explicit --timeline 1 follows production: its WAL to the end, none of the copy', () => {
    const plan = planFromIndex(index, [BACKUP], { databaseId: DB, target: { kind: 'latest' }, timeline: 1 });
    expect(plan.timeline).toBe(1);
    expect(plan.walFiles).toEqual([seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 5)]);
  });

  it('an explicit --timeline 2 follows the copy', () => {
    const plan = planFromIndex(index, [BACKUP], { databaseId: DB, target: { kind: 'latest' }, timeline: 2 });
    expect(plan.walFiles).toEqual([seg(1, 2), seg(1, 3), seg(2, 4), seg(2, 5)]);
  });

  it('windows reports them', () => {
    expect(windowsFromIndex(index, [BACKUP]).liveBranches.map((b) => [b.timeline, b.other])).toEqual([
      [2, 1],
    ]);
  });
});
