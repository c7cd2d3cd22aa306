import {
  baseBackupKeys,
  clusterKey,
  parseBaseKey,
  parseWalKey,
  timelineKey,
  walKey,
  walLookupPrefix,
  walPartition,
  walPrefix,
} from './pitr.layout';

const DB = '7441234567890123456';
const SHA = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08';
const BACKUP_ID = '20261125T114512.345Z';

describe('WAL object keys', () => {
  it.each([
    ['segment', '000000010000000000000003', 1, '000000010000000000000003'],
    ['partial', '000000010000000000000005.partial', 1, '000000010000000000000005'],
    ['backup', '000000020000000000000003.00000028.backup', 2, '000000020000000000000003'],
    ['history', '00000002.history', 2, undefined],
  ])('walKey / parseWalKey round-trip a %s', (kind, name, timeline, segmentName) => {
    const key = walKey(DB, name, SHA);
    const part = segmentName ? segmentName.slice(0, 16) : 'history';
    expect(key).toBe(`${DB}/wal/${part}/${name}-${SHA}.zst.pgp`);
    expect(key.startsWith(walLookupPrefix(DB, name))).toBe(true);
    expect(key.startsWith(walPrefix(DB))).toBe(true);
    const p = parseWalKey(key);
    expect(p).toEqual({
      name,
      kind,
      timeline,
      ...(segmentName ? { segmentName } : {}),
      key,
      sha256: SHA,
      extensions: ['zst', 'pgp'],
    });
  });

  it('the lookup prefix of a segment does not match its .partial or .backup siblings', () => {
    const prefix = walLookupPrefix(DB, '000000010000000000000003');
    expect(prefix).toBe(`${DB}/wal/0000000100000000/000000010000000000000003-`);
    expect(walKey(DB, '000000010000000000000003.partial', SHA).startsWith(prefix)).toBe(false);
    expect(walKey(DB, '000000010000000000000003.00000028.backup', SHA).startsWith(prefix)).toBe(false);
  });

  it('format 1 (flat wal/) keys stay readable', () => {
    const flat = walKey(DB, '000000010000000000000003', SHA, 1);
    expect(flat).toBe(`${DB}/wal/000000010000000000000003-${SHA}.zst.pgp`);
    expect(walLookupPrefix(DB, '00000002.history', 1)).toBe(`${DB}/wal/00000002.history-`);
    expect(parseWalKey(flat)).toMatchObject({ name: '000000010000000000000003', sha256: SHA, key: flat });
  });

  it('one partition per timeline and log (256 segments of 16 MiB); history files apart', () => {
    expect(walPartition('0000000200000003000000FF')).toBe('0000000200000003');
    expect(walPartition('000000020000000300000001.partial')).toBe('0000000200000003');
    expect(walPartition('000000020000000300000001.00000028.backup')).toBe('0000000200000003');
    expect(walPartition('00000002.history')).toBe('history');
  });

  it('works with a named database id', () => {
    const key = walKey('orders-prod.eu_1', '000000010000000000000003', SHA);
    expect(parseWalKey(key)).toMatchObject({ name: '000000010000000000000003', sha256: SHA });
  });

  const good = walKey(DB, '000000010000000000000003', SHA);
  it.each([
    ['temp file of our own writer', `${good}.dbcrate-tmp`],
    [
      'temp file of the fs storage',
      `${DB}/wal/.000000010000000000000003-${SHA}.zst.pgp.tmp-0123456789abcdef`,
    ],
    ['wrong directory', `${DB}/base/000000010000000000000003-${SHA}.zst.pgp`],
    ['nested too deep', `${DB}/wal/0000000100000000/x/000000010000000000000003-${SHA}.zst.pgp`],
    ['in the wrong partition', `${DB}/wal/0000000100000001/000000010000000000000003-${SHA}.zst.pgp`],
    ['a segment among the history files', `${DB}/wal/history/000000010000000000000003-${SHA}.zst.pgp`],
    ['no database id', `wal/000000010000000000000003-${SHA}.zst.pgp`],
    ['sha too short', `${DB}/wal/000000010000000000000003-${SHA.slice(1)}.zst.pgp`],
    ['sha too long', `${DB}/wal/000000010000000000000003-${SHA}0.zst.pgp`],
    ['upper-case sha', `${DB}/wal/000000010000000000000003-${SHA.toUpperCase()}.zst.pgp`],
    ['non-hex sha', `${DB}/wal/000000010000000000000003-${'g'.repeat(64)}.zst.pgp`],
    ['no extensions', `${DB}/wal/000000010000000000000003-${SHA}`],
    ['not a WAL name', `${DB}/wal/00000001000000000000000-${SHA}.zst.pgp`],
    ['lower-case WAL name', `${DB}/wal/00000001000000000000000a-${SHA}.zst.pgp`],
    ['archive_status marker', `${DB}/wal/000000010000000000000003.ready-${SHA}.zst.pgp`],
    ['cluster.json', `${DB}/cluster.json`],
  ])('does not parse: %s', (_what, key) => {
    expect(parseWalKey(key)).toBeUndefined();
  });
});

describe('base backup keys', () => {
  it('baseBackupKeys / parseBaseKey round-trip', () => {
    const { dataKey, manifestKey } = baseBackupKeys(DB, BACKUP_ID);
    expect(dataKey).toBe(`${DB}/base/${BACKUP_ID}/base.tar.zst.pgp`);
    expect(manifestKey).toBe(`${DB}/base/${BACKUP_ID}/backup.manifest.json`);
    expect(parseBaseKey(dataKey)).toEqual({ databaseId: DB, backupId: BACKUP_ID, kind: 'data' });
    expect(parseBaseKey(manifestKey)).toEqual({ databaseId: DB, backupId: BACKUP_ID, kind: 'manifest' });
  });

  it.each([
    ['not a backup id', `${DB}/base/2026-11-25/backup.manifest.json`],
    ['backup id without milliseconds', `${DB}/base/20261125T114512Z/backup.manifest.json`],
    ['wrong directory', `${DB}/dumps/${BACKUP_ID}/backup.manifest.json`],
    ['unknown file', `${DB}/base/${BACKUP_ID}/notes.txt`],
    ['too deep', `${DB}/base/${BACKUP_ID}/x/backup.manifest.json`],
    ['backup dir only', `${DB}/base/${BACKUP_ID}`],
    ['a WAL key', walKey(DB, '000000010000000000000003', SHA)],
  ])('parseBaseKey ignores %s', (_what, key) => {
    expect(parseBaseKey(key)).toBeUndefined();
  });
});

describe('other keys', () => {
  it('timelineKey is 8 upper-case hex digits, like a history file name', () => {
    expect(timelineKey(DB, 2)).toBe(`${DB}/timelines/00000002.json`);
    expect(timelineKey(DB, 0x1a)).toBe(`${DB}/timelines/0000001A.json`);
  });

  it('clusterKey', () => {
    expect(clusterKey(DB)).toBe(`${DB}/cluster.json`);
  });
});
