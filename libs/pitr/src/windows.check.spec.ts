import { ErrorCodes } from '@dbcrate/core';
import type { LiveBranch } from './timeline.branches';
import type { DatabaseWindows, WalGap } from './windows';
import { archiveProblem } from './windows.check';

const window = (gaps: WalGap[] = []) => ({
  timeline: 1,
  from: { lsn: '0/2000028', time: '2026-12-07T10:00:00Z', backupId: 'b1' },
  to: { lsn: '0/5000000' },
  gaps,
});
const db = (o: Partial<DatabaseWindows> = {}): DatabaseWindows => ({
  databaseId: 'db1',
  baseBackups: [],
  timelines: [window()],
  unreachable: [],
  conflicts: [],
  liveBranches: [],
  ...o,
});
const gap: WalGap = {
  timeline: 1,
  firstMissing: '000000010000000000000003',
  missing: 2,
  resumesAt: '000000010000000000000005',
};
const branch: LiveBranch = {
  timeline: 2,
  parent: 1,
  forkLsn: '0/3000000',
  forkedAt: '2026-12-07T11:00:00Z',
  other: 1,
  walFile: '000000010000000000000006',
  storedAt: '2026-12-07T11:05:00Z',
};

describe('archiveProblem: the rule `windows` exits on', () => {
  it('finds nothing wrong with a contiguous archive, or with none', () => {
    expect(archiveProblem([db()])).toBeUndefined();
    expect(archiveProblem([])).toBeUndefined();
  });

  it('names every gap, with its database, before anything else', () => {
    const e = archiveProblem([
      db({ liveBranches: [branch] }),
      db({ databaseId: 'db2', timelines: [window([gap])] }),
    ]);
    expect(e?.code).toBe(ErrorCodes.WAL_GAP);
    expect(e?.message).toContain('db2: 000000010000000000000003');
    expect(e?.hint).toMatch(/new base backup/);
  });

  it('reports WAL archived twice with different content as a gap', () => {
    const e = archiveProblem([db({ conflicts: ['000000010000000000000004'] })]);
    expect(e?.code).toBe(ErrorCodes.WAL_GAP);
    expect(e?.message).toContain('different content: 000000010000000000000004');
  });

  it('asks for an explicit timeline when two grow at once', () => {
    const e = archiveProblem([db({ liveBranches: [branch] })]);
    expect(e?.code).toBe(ErrorCodes.TIMELINE_BRANCHES);
    expect(e?.hint).toContain('--timeline (2 or 1)');
  });
});
