import { compareSnapshots, type SnapshotEntry } from './snapshots';
import type { DumpManifest } from './manifest';

function entry(
  id: string,
  server: Partial<DumpManifest['server']> | undefined,
  storedAt?: string,
): SnapshotEntry {
  return {
    databaseId: 'db',
    snapshotId: id,
    time: new Date(`${id.slice(0, 4)}-01-01T00:00:00Z`),
    status: server ? 'complete' : 'damaged',
    storedAt: storedAt ? new Date(storedAt) : undefined,
    manifest: server
      ? ({ startedAt: '2000-01-01T00:00:00Z', server: { database: 'db', ...server } } as DumpManifest)
      : undefined,
  };
}

describe('compareSnapshots', () => {
  it('orders by the server clock, not by the id (which the client clock chose)', () => {
    const a = entry('2030-a', {
      startTime: '2026-11-25T10:00:00.000Z',
      systemIdentifier: '1',
      startLsn: '0/100',
    });
    const b = entry('2020-b', {
      startTime: '2026-11-25T11:00:00.000Z',
      systemIdentifier: '1',
      startLsn: '0/200',
    });
    expect([a, b].sort(compareSnapshots).map((e) => e.snapshotId)).toEqual(['2030-a', '2020-b']);
    expect([b, a].sort(compareSnapshots).map((e) => e.snapshotId)).toEqual(['2030-a', '2020-b']);
  });

  it('breaks a tie of one millisecond by the WAL position of the same server', () => {
    const t = '2026-11-25T10:00:00.000Z';
    const a = entry('x2', { startTime: t, systemIdentifier: '7', startLsn: '0/300' });
    const b = entry('x1', { startTime: t, systemIdentifier: '7', startLsn: '0/2FF' });
    expect([a, b].sort(compareSnapshots).map((e) => e.snapshotId)).toEqual(['x1', 'x2']);
  });

  it('is a total order over a mix of servers, old manifests and unreadable ones (transitive)', () => {
    const items = [
      entry('2026-1', { startTime: '2026-11-25T10:00:00.000Z', systemIdentifier: '1', startLsn: '0/900' }),
      entry('2026-2', { startTime: '2026-11-25T11:00:00.000Z', systemIdentifier: '2', startLsn: '0/100' }),
      entry('2026-3', { startTime: '2026-11-25T12:00:00.000Z', systemIdentifier: '1', startLsn: '0/500' }),
      entry('2026-4', {}),
      entry('2026-5', undefined, '2026-11-25T10:30:00.000Z'),
    ];
    for (const a of items)
      for (const b of items)
        for (const c of items) {
          if (compareSnapshots(a, b) < 0 && compareSnapshots(b, c) < 0)
            expect(compareSnapshots(a, c)).toBeLessThan(0);
        }
    const sorted = [...items].sort(compareSnapshots).map((e) => e.snapshotId);
    expect(sorted).toEqual(['2026-4', '2026-1', '2026-5', '2026-2', '2026-3']);
  });
});
