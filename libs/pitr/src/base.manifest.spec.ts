import { ErrorCodes } from '@dbcrate/core';
import {
  BASE_MANIFEST_FORMAT,
  parseBaseManifest,
  serializeBaseManifest,
  type BaseManifest,
} from './base.manifest';
import { backupWalFiles, parseWalSegmentSize } from './basebackup.pipeline';
import { parseLsn } from './wal.names';

const sample = (): BaseManifest => ({
  format: BASE_MANIFEST_FORMAT,
  formatVersion: 1,
  kind: 'physical',
  databaseId: '7441234567890123456',
  backupId: '20261125T114512.345Z',
  dbcrateVersion: '0.1.0',
  startedAt: '2026-11-25T11:45:12.345Z',
  finishedAt: '2026-11-25T11:46:01.002Z',
  startLsn: '0/2000028',
  stopLsn: '0/2000100',
  timeline: 1,
  startWalFile: '000000010000000000000002',
  stopWalFile: '000000010000000000000002',
  server: {
    version: '15.14 (Debian 15.14-0+deb12u1)',
    versionNum: 150014,
    major: 15,
    systemIdentifier: '7441234567890123456',
  },
  walSegmentSize: 16 * 1024 * 1024,
  tool: { name: 'pg_basebackup', version: '15.14' },
  object: {
    key: '7441234567890123456/base/20261125T114512.345Z/base.tar.zst.pgp',
    storedSize: 4_123_456,
    sha256: 'a'.repeat(64),
    plaintextSize: 31_000_000,
  },
  compression: { codec: 'zstd', implementation: 'zstd-napi', level: 3 },
  encryption: {
    cipher: 'openpgp',
    recipients: [
      { fingerprint: 'ABCDEF0123456789ABCDEF0123456789ABCDEF01', encryptionKeyIds: ['0123456789ABCDEF'] },
    ],
  },
  tablespaces: [
    { oid: 1663, name: 'pg_default', location: '' },
    { oid: 1664, name: 'pg_global', location: '' },
  ],
});

const KEY = 'db/base/20261125T114512.345Z/backup.manifest.json';

describe('base backup manifest', () => {
  it('round-trips through serialize/parse', () => {
    const m = sample();
    const raw = serializeBaseManifest(m);
    expect(raw.toString()).toMatch(/\n$/);
    expect(JSON.parse(raw.toString()).format).toBe('dbcrate.base.manifest');
    expect(parseBaseManifest(raw, KEY)).toEqual(m);
    expect(parseBaseManifest(raw.toString(), KEY)).toEqual(m);
  });

  it('refuses to serialize an invalid manifest', () => {
    expect(() => serializeBaseManifest({ ...sample(), startLsn: 'nope' })).toThrow();
  });

  it.each<[string, (m: Record<string, unknown>) => void, RegExp]>([
    ['a foreign format', (m) => (m.format = 'dbcrate.dump.manifest'), /format/],
    ['a newer version', (m) => (m.formatVersion = 3), /formatVersion/],
    ['a logical kind', (m) => (m.kind = 'logical'), /kind/],
    ['a malformed LSN', (m) => (m.startLsn = '0-2000028'), /startLsn: not an LSN/],
    ['a stop before the start', (m) => (m.stopLsn = '0/1000000'), /stopLsn: stop LSN 0\/1000000 is before/],
    ['a lower-case WAL file name', (m) => (m.startWalFile = '00000001000000000000000a'), /startWalFile/],
    ['a history file as stop file', (m) => (m.stopWalFile = '00000002.history'), /stopWalFile/],
    ['timeline 0', (m) => (m.timeline = 0), /timeline/],
    [
      'a non-numeric system identifier',
      (m) => ((m.server as { systemIdentifier: string }).systemIdentifier = 'x1'),
      /server.systemIdentifier/,
    ],
    ['a bad sha256', (m) => ((m.object as { sha256: string }).sha256 = 'A'.repeat(64)), /object.sha256/],
    [
      'no recipients',
      (m) => ((m.encryption as { recipients: unknown[] }).recipients = []),
      /encryption.recipients/,
    ],
    ['a missing tablespaces list', (m) => delete m.tablespaces, /tablespaces/],
    ['a non-ISO start time', (m) => (m.startedAt = 'yesterday'), /startedAt/],
  ])('rejects %s with E_INTEGRITY', (_name, mutate, message) => {
    const doc = JSON.parse(serializeBaseManifest(sample()).toString()) as Record<string, unknown>;
    mutate(doc);
    let err: { code?: string; message?: string; hint?: string } | undefined;
    try {
      parseBaseManifest(JSON.stringify(doc), KEY);
    } catch (e) {
      err = e as typeof err;
    }
    expect(err?.code).toBe(ErrorCodes.INTEGRITY);
    expect(err?.message).toContain(KEY);
    expect(err?.message).toMatch(message);
    expect(err?.hint).toBeTruthy();
  });

  it('rejects text that is not JSON', () => {
    expect(() => parseBaseManifest('{"format": ', KEY)).toThrow(/not valid JSON/);
  });
});

describe('SHOW wal_segment_size', () => {
  it.each([
    ['16MB', 16 * 1024 * 1024],
    ['1MB', 1024 * 1024],
    ['1GB', 1024 ** 3],
    ['64MB', 64 * 1024 * 1024],
    ['16777216', 16 * 1024 * 1024],
    ['16384kB', 16 * 1024 * 1024],
  ])('%s → %d bytes', (shown, bytes) => {
    expect(parseWalSegmentSize(shown)).toBe(bytes);
  });

  it.each(['', '16 MiB', '3MB', '512kB', '2GB'])('refuses %j', (shown) => {
    expect(() => parseWalSegmentSize(shown)).toThrow(/wal_segment_size/);
  });
});

describe('WAL files of a backup', () => {
  const seg = 16 * 1024 * 1024;
  it('names the segments holding the start and the byte before the stop', () => {
    expect(
      backupWalFiles({ timeline: 1, startLsn: parseLsn('0/2000028'), stopLsn: parseLsn('0/2000100') }, seg),
    ).toEqual({
      startWalFile: '000000010000000000000002',
      stopWalFile: '000000010000000000000002',
    });
    expect(
      backupWalFiles({ timeline: 2, startLsn: parseLsn('0/2000028'), stopLsn: parseLsn('0/5000100') }, seg),
    ).toEqual({
      startWalFile: '000000020000000000000002',
      stopWalFile: '000000020000000000000005',
    });
  });

  it('takes the previous segment when the stop is on a segment boundary', () => {
    expect(
      backupWalFiles({ timeline: 1, startLsn: parseLsn('0/2000028'), stopLsn: parseLsn('0/3000000') }, seg)
        .stopWalFile,
    ).toBe('000000010000000000000002');
  });

  it('names the stop file on the stop timeline', () => {
    expect(
      backupWalFiles(
        { timeline: 1, stopTimeline: 2, startLsn: parseLsn('0/2000028'), stopLsn: parseLsn('0/3000100') },
        seg,
      ),
    ).toEqual({ startWalFile: '000000010000000000000002', stopWalFile: '000000020000000000000003' });
  });

  it('crosses the 4 GiB boundary and honours other segment sizes', () => {
    expect(
      backupWalFiles({ timeline: 1, startLsn: parseLsn('0/FF000028'), stopLsn: parseLsn('1/100') }, seg),
    ).toEqual({
      startWalFile: '0000000100000000000000FF',
      stopWalFile: '000000010000000100000000',
    });
    expect(
      backupWalFiles(
        { timeline: 1, startLsn: parseLsn('0/4000028'), stopLsn: parseLsn('0/4000100') },
        64 * 1024 * 1024,
      ),
    ).toEqual({
      startWalFile: '000000010000000000000001',
      stopWalFile: '000000010000000000000001',
    });
  });
});
