import { createHash } from 'node:crypto';
import { DbcrateError, ErrorCodes, ExitCodes } from '@dbcrate/core';
import type { BaseManifest } from './base.manifest';
import { parseWalKey, walKey } from './pitr.layout';
import { planFromIndex, type PlanOptions } from './recover';
import { DEFAULT_WAL_SEGMENT_SIZE } from './wal.names';
import type { ArchivedWalFile, WalIndex } from './windows';

const DB = '7441234567890123456';
const SEG = DEFAULT_WAL_SEGMENT_SIZE;

function seg(tli: number, n: number): string {
  return `${tli.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;
}

function makeIndex(names: string[]): WalIndex {
  const files = new Map<string, ArchivedWalFile>();
  for (const n of names) {
    const p = parseWalKey(walKey(DB, n, createHash('sha256').update(n).digest('hex')))!;
    files.set(n, { ...p, lastModified: new Date(Date.UTC(2026, 10, 25, 12, parseInt(n.slice(16), 16))) });
  }
  return { databaseId: DB, segmentSize: SEG, files, conflicts: [], timelines: [1], histories: new Map() };
}

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

function refusal(index: WalIndex, opts: Partial<PlanOptions>): DbcrateError {
  try {
    planFromIndex(index, [BACKUP], {
      databaseId: DB,
      target: { kind: 'latest' },
      timeline: 'latest',
      ...opts,
    });
  } catch (e) {
    expect(e).toBeInstanceOf(DbcrateError);
    return e as DbcrateError;
  }
  throw new Error('planFromIndex did not refuse');
}

describe('planFromIndex: a WAL gap before the requested point', () => {
  // 2, 3, 4 archived, 5 missing, 6 and 7 archived
  const gapped = makeIndex([seg(1, 2), seg(1, 3), seg(1, 4), seg(1, 6), seg(1, 7)]);

  it('--latest across a gap is refused with exit 7, naming the gap and what can be reached', () => {
    const e = refusal(gapped, {});
    expect(e.code).toBe(ErrorCodes.WAL_GAP);
    expect(ExitCodes[e.code]).toBe(7);
    expect(e.message).toContain(seg(1, 5));
    expect(e.message).toContain(`resumes at ${seg(1, 6)}`);
    expect(e.message).toContain('0/5000000'); // the end of contiguous WAL
    expect(e.hint).toContain('--accept-gap');
  });

  it('with acceptGap, --latest plans to the end of contiguous WAL and says which gap it accepted', () => {
    const plan = planFromIndex(gapped, [BACKUP], {
      databaseId: DB,
      target: { kind: 'latest' },
      timeline: 'latest',
      acceptGap: true,
    });
    expect(plan.walFiles).toEqual([seg(1, 2), seg(1, 3), seg(1, 4)]);
    expect(plan.endLsn).toBe('0/5000000');
    expect(plan.acceptedGap?.firstMissing).toBe(seg(1, 5));
  });

  it('without a gap --latest needs no acceptance', () => {
    const plan = planFromIndex(makeIndex([seg(1, 2), seg(1, 3)]), [BACKUP], {
      databaseId: DB,
      target: { kind: 'latest' },
      timeline: 'latest',
    });
    expect(plan.acceptedGap).toBeUndefined();
    expect(plan.walFiles).toEqual([seg(1, 2), seg(1, 3)]);
  });

  it('a target LSN past the gap is refused even with acceptGap', () => {
    const e = refusal(gapped, { target: { kind: 'lsn', lsn: '0/6000100' }, acceptGap: true });
    expect(e.code).toBe(ErrorCodes.OUT_OF_WINDOW);
    expect(e.message).toContain(seg(1, 5));
  });
});

describe('planFromIndex: a target LSN at the end of contiguous WAL', () => {
  const index = makeIndex([seg(1, 2), seg(1, 3), seg(1, 4)]);

  it('equal to the end is refused before anything is downloaded (exit 7, with the window)', () => {
    const e = refusal(index, { target: { kind: 'lsn', lsn: '0/5000000' } });
    expect(e.code).toBe(ErrorCodes.OUT_OF_WINDOW);
    expect(ExitCodes[e.code]).toBe(7);
    expect(e.message).toMatch(/at the end of the contiguous archived WAL \(0\/5000000\)/);
    expect(e.message).toMatch(/recoverable from .* to .*0\/5000000/);
  });

  it('past the end too', () => {
    expect(refusal(index, { target: { kind: 'lsn', lsn: '0/5000028' } }).message).toMatch(/past the end/);
  });

  it('just before the end is planned, up to the segment holding it', () => {
    const plan = planFromIndex(index, [BACKUP], {
      databaseId: DB,
      target: { kind: 'lsn', lsn: '0/4FFFFF0' },
      timeline: 'latest',
    });
    expect(plan.walFiles).toEqual([seg(1, 2), seg(1, 3), seg(1, 4)]);
  });
});

describe('planFromIndex: a WAL file archived twice with different content', () => {
  it('on the path, it is refused before anything is downloaded (exit 9), naming the file', () => {
    const index = { ...makeIndex([seg(1, 2), seg(1, 3), seg(1, 4)]), conflicts: [seg(1, 3)] };
    const e = refusal(index, {});
    expect(e.code).toBe(ErrorCodes.WAL_CONFLICT);
    expect(ExitCodes[e.code]).toBe(9);
    expect(e.message).toContain(seg(1, 3));
    expect(e.hint).toMatch(/nothing was downloaded/);
  });

  it('a conflict after the target does not stop a recovery that never reads it', () => {
    const index = { ...makeIndex([seg(1, 2), seg(1, 3), seg(1, 4)]), conflicts: [seg(1, 4)] };
    const plan = planFromIndex(index, [BACKUP], {
      databaseId: DB,
      target: { kind: 'lsn', lsn: '0/3000100' },
      timeline: 'latest',
    });
    expect(plan.walFiles).toEqual([seg(1, 2), seg(1, 3)]);
  });
});
