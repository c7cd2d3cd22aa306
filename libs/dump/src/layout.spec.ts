import { DbcrateError } from '@dbcrate/core';
import { defaultDatabaseId, dumpKeys, legacyDatabaseId, parseDumpKey } from './layout';
import { isSnapshotId, snapshotIdFor, snapshotTime, validateDatabaseId } from '@dbcrate/plumbing';

describe('layout', () => {
  const t = new Date('2026-11-25T11:45:12.345Z');

  it('makes sortable snapshot ids from UTC time and back', () => {
    expect(snapshotIdFor(t, '0a1b2c3d')).toBe('20261125T114512.345Z-0a1b2c3d');
    expect(snapshotTime('20261125T114512.345Z-0a1b2c3d')?.toISOString()).toBe(t.toISOString());
    expect(snapshotTime('latest')).toBeUndefined();
    expect(snapshotIdFor(new Date(t.getTime() + 1)) > snapshotIdFor(t)).toBe(true);
  });

  it('gives two backups started in the same millisecond different ids; old ids stay valid', () => {
    const ids = new Set(Array.from({ length: 1000 }, () => snapshotIdFor(t)));
    expect(ids.size).toBe(1000);
    for (const id of ids) expect(id).toMatch(/^20261125T114512\.345Z-[0-9a-f]{8}$/);
    expect(isSnapshotId('20261125T114512.345Z')).toBe(true);
    expect(snapshotTime('20261125T114512.345Z')?.toISOString()).toBe(t.toISOString());
    expect(isSnapshotId('20261125T114512.345Z-')).toBe(false);
    expect(isSnapshotId('20261125T114512.345Z-../x')).toBe(false);
  });

  it('builds keys under <db>/dumps/<date>/ and parses them back', () => {
    const id = snapshotIdFor(t, '0a1b2c3d');
    const k = dumpKeys('orders', id, ['zst', 'pgp']);
    expect(k.dataKey).toBe(`orders/dumps/2026-11-25/${id}.dump.zst.pgp`);
    expect(k.manifestKey).toBe(`orders/dumps/2026-11-25/${id}.manifest.json`);
    expect(parseDumpKey(k.dataKey)).toEqual({
      databaseId: 'orders',
      snapshotId: id,
      kind: 'data',
      extensions: ['zst', 'pgp'],
    });
    expect(parseDumpKey(k.manifestKey)?.kind).toBe('manifest');
    // keys written before the random suffix
    expect(parseDumpKey('orders/dumps/2026-11-25/20261125T114512.345Z.dump.zst.pgp')?.snapshotId).toBe(
      '20261125T114512.345Z',
    );
  });

  it('ignores keys that are not dumps (temp files, probes)', () => {
    expect(parseDumpKey('orders/dumps/2026-11-25/.20261125T114512.345Z.dump.zst.pgp.tmp-1')).toBeUndefined();
    expect(parseDumpKey('.dbcrate-probe/x')).toBeUndefined();
    expect(parseDumpKey('orders/base/x/y')).toBeUndefined();
  });

  it('validates database ids and derives a safe default', () => {
    expect(() => validateDatabaseId('../etc')).toThrow(DbcrateError);
    expect(defaultDatabaseId('orders')).toBe('orders'); // a safe name keeps its id
    expect(defaultDatabaseId('my db')).toMatch(/^my_db-[0-9a-f]{12}$/);
  });

  it('derives database ids that never collide, and knows the old derivation', () => {
    const names = ['a/b', 'a_b', 'a b', 'a?b', 'ünï', 'uni', 'n', '_x', 'x', '', '..', 'Ünï'];
    const ids = names.map(defaultDatabaseId);
    expect(new Set(ids).size).toBe(names.length);
    for (const id of ids) expect(validateDatabaseId(id)).toBe(id);
    expect(defaultDatabaseId('ünï')).toMatch(/^uni-[0-9a-f]{12}$/);
    expect(defaultDatabaseId('a/b')).toBe(defaultDatabaseId('a/b'));
    expect(defaultDatabaseId('x'.repeat(300)).length).toBeLessThanOrEqual(128);
    expect(legacyDatabaseId('a/b')).toBe('a_b');
    expect(legacyDatabaseId('ünï')).toBe('n_');
  });
});
