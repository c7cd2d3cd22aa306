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

  it('a parent that grew after the fork only as a .partial (an old primary promoted away from) is a live branch', () => {
    // production went on in segment 5 of timeline 1, then its standby took over: only 5.partial arrives
    const index = makeIndex([...BASE, [`${seg(1, 5)}.partial`, 20]], FORK);
    expect(liveBranches(index, 2).map((b) => [b.timeline, b.other, b.walFile])).toEqual([
      [2, 1, `${seg(1, 5)}.partial`],
    ]);
  });

  it('every fork on the path counts: timeline 1 growing after 2 forked is caught when 3 is the newest', () => {
    const chain = {
      2: [{ timeline: 1, switchLsn: '0/4000060' }],
      3: [
        { timeline: 1, switchLsn: '0/4000060' },
        { timeline: 2, switchLsn: '0/6000060' },
      ],
    };
    const files: Array<[string, number]> = [
      ...BASE,
      [seg(2, 6), 14],
      [seg(1, 4), 15], // production, still on timeline 1 after the copy forked at minute 10
      [seg(1, 5), 16],
      ['00000003.history', 30],
      [`${seg(2, 6)}.partial`, 31],
      [seg(3, 6), 32],
    ];
    const live = liveBranches(makeIndex(files, chain), 3);
    expect(live.map((b) => [b.timeline, b.parent, b.other, b.walFile])).toEqual([[2, 1, 1, seg(1, 5)]]);
    let err: DbcrateError | undefined;
    try {
      planFromIndex(makeIndex(files, chain), [BACKUP], {
        databaseId: DB,
        target: { kind: 'latest' },
        timeline: 'latest',
      });
    } catch (e) {
      err = e as DbcrateError;
    }
    expect(err?.code).toBe(ErrorCodes.TIMELINE_BRANCHES);
    expect(err!.hint).toMatch(/--timeline 3 or --timeline 1/);
  });

  it('a timeline that lived on before a later fork from an older point of it is not a live branch', () => {
    // 3 forked from 2 at 0/6000060 (a PITR on 2), after 2 had gone on to segment 8
    const chain = {
      2: [{ timeline: 1, switchLsn: '0/4000060' }],
      3: [
        { timeline: 1, switchLsn: '0/4000060' },
        { timeline: 2, switchLsn: '0/6000060' },
      ],
    };
    const files: Array<[string, number]> = [
      ...BASE,
      [seg(2, 6), 14],
      [seg(2, 7), 15],
      [seg(2, 8), 16],
      ['00000003.history', 30],
      [`${seg(2, 6)}.partial`, 31],
      [seg(3, 6), 32],
    ];
    expect(liveBranches(makeIndex(files, chain), 3)).toEqual([]);
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
