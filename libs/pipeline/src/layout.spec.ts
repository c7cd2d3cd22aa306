import { DbcrateError } from '@dbcrate/core';
import {
  defaultDatabaseId,
  dumpKeys,
  parseDumpKey,
  snapshotIdFor,
  snapshotTime,
  validateDatabaseId,
} from './layout';

describe('layout', () => {
  const t = new Date('2026-11-25T11:45:12.345Z');

  it('makes sortable snapshot ids from UTC time and back', () => {
    expect(snapshotIdFor(t)).toBe('20261125T114512.345Z');
    expect(snapshotTime('20261125T114512.345Z')?.toISOString()).toBe(t.toISOString());
    expect(snapshotTime('latest')).toBeUndefined();
  });

  it('builds keys under <db>/dumps/<date>/ and parses them back', () => {
    const k = dumpKeys('orders', snapshotIdFor(t), ['zst', 'pgp']);
    expect(k.dataKey).toBe('orders/dumps/2026-11-25/20261125T114512.345Z.dump.zst.pgp');
    expect(k.manifestKey).toBe('orders/dumps/2026-11-25/20261125T114512.345Z.manifest.json');
    expect(parseDumpKey(k.dataKey)).toEqual({
      databaseId: 'orders',
      snapshotId: '20261125T114512.345Z',
      kind: 'data',
      extensions: ['zst', 'pgp'],
    });
    expect(parseDumpKey(k.manifestKey)?.kind).toBe('manifest');
  });

  it('ignores keys that are not dumps (temp files, probes)', () => {
    expect(parseDumpKey('orders/dumps/2026-11-25/.20261125T114512.345Z.dump.zst.pgp.tmp-1')).toBeUndefined();
    expect(parseDumpKey('.dbcrate-probe/x')).toBeUndefined();
    expect(parseDumpKey('orders/base/x/y')).toBeUndefined();
  });

  it('validates database ids and derives a safe default', () => {
    expect(() => validateDatabaseId('../etc')).toThrow(DbcrateError);
    expect(defaultDatabaseId('my db')).toBe('my_db');
  });
});
