import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import {
  DEFAULT_WAL_SEGMENT_SIZE,
  formatLsn,
  historyFileName,
  isLsn,
  parseLsn,
  parseTimelineHistory,
  parseWalFileName,
  readSegmentHeader,
  requireWalFileName,
  segmentNumber,
  segmentOfLsn,
  segmentStartLsn,
  systemIdentifierFromControlFile,
  walFileName,
} from './wal.names';

const MiB = 1024 * 1024;

/** The DbcrateError `fn` throws (fails the test when it throws anything else or nothing). */
function thrown(fn: () => unknown): DbcrateError {
  try {
    fn();
  } catch (e) {
    if (e instanceof DbcrateError) return e;
    throw e;
  }
  throw new Error('expected a DbcrateError, but nothing was thrown');
}

/** A 40-byte XLogLongPageHeaderData, little-endian, padded to `size`. */
function longHeader(
  f: {
    magic?: number;
    info?: number;
    tli?: number;
    pageaddr?: bigint;
    remLen?: number;
    sysid?: bigint;
    segSize?: number;
    blcksz?: number;
  },
  size = 40,
): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt16LE(f.magic ?? 0xd110, 0);
  b.writeUInt16LE(f.info ?? 0x0002, 2);
  b.writeUInt32LE(f.tli ?? 1, 4);
  b.writeBigUInt64LE(f.pageaddr ?? 0n, 8);
  b.writeUInt32LE(f.remLen ?? 0, 16);
  b.writeUInt32LE(0xdeadbeef, 20); // padding: must be ignored
  b.writeBigUInt64LE(f.sysid ?? 0n, 24);
  b.writeUInt32LE(f.segSize ?? DEFAULT_WAL_SEGMENT_SIZE, 32);
  b.writeUInt32LE(f.blcksz ?? 8192, 36);
  return b;
}

describe('parseWalFileName', () => {
  it('recognises a segment', () => {
    expect(parseWalFileName('000000010000000000000003')).toEqual({
      name: '000000010000000000000003',
      kind: 'segment',
      timeline: 1,
      segmentName: '000000010000000000000003',
    });
    expect(parseWalFileName('0000001A00000002000000FF')).toMatchObject({ kind: 'segment', timeline: 26 });
  });

  it('recognises a partial segment', () => {
    expect(parseWalFileName('000000010000000000000005.partial')).toEqual({
      name: '000000010000000000000005.partial',
      kind: 'partial',
      timeline: 1,
      segmentName: '000000010000000000000005',
    });
  });

  it('recognises a backup history file', () => {
    expect(parseWalFileName('000000020000000000000003.00000028.backup')).toEqual({
      name: '000000020000000000000003.00000028.backup',
      kind: 'backup',
      timeline: 2,
      segmentName: '000000020000000000000003',
    });
  });

  it('recognises a timeline history file (no segment name)', () => {
    const p = parseWalFileName('0000000A.history');
    expect(p).toEqual({ name: '0000000A.history', kind: 'history', timeline: 10 });
    expect(p?.segmentName).toBeUndefined();
  });

  it.each([
    ['empty', ''],
    ['lower-case hex', '00000001000000000000000a'],
    ['23 hex digits', '00000001000000000000003'],
    ['25 hex digits', '0000000100000000000000030'],
    ['non-hex', '00000001000000000000000G'],
    ['path, not a name', 'pg_wal/000000010000000000000003'],
    ['temp file', '000000010000000000000003.dbcrate-tmp'],
    ['archive_status marker', '000000010000000000000003.ready'],
    ['history with 7 hex', '0000002.history'],
    ['lower-case history', '0000000a.history'],
    ['backup without offset', '000000010000000000000003.backup'],
    ['backup with short offset', '000000010000000000000003.0028.backup'],
    ['trailing newline', '000000010000000000000003\n'],
    ['RECOVERYXLOG', 'RECOVERYXLOG'],
    ['partial of a history file', '00000002.history.partial'],
  ])('rejects junk: %s', (_what, name) => {
    expect(parseWalFileName(name)).toBeUndefined();
  });

  it('requireWalFileName throws E_USAGE on junk and returns the parse otherwise', () => {
    expect(thrown(() => requireWalFileName('junk')).code).toBe(ErrorCodes.USAGE);
    expect(requireWalFileName('00000002.history').kind).toBe('history');
  });
});

describe('segmentNumber / walFileName', () => {
  it.each([
    [1, 0n, '000000010000000000000000'],
    [1, 3n, '000000010000000000000003'],
    [1, 255n, '0000000100000000000000FF'],
    [1, 256n, '000000010000000100000000'],
    [1, 257n, '000000010000000100000001'],
    [2, 511n, '0000000200000001000000FF'],
    [0x1a, 256n * 0x1234n + 0x56n, '0000001A0000123400000056'],
  ])('16 MiB: timeline %d segNo %d ⇄ %s', (tli, segNo, name) => {
    expect(walFileName(tli, segNo)).toBe(name);
    expect(segmentNumber(name)).toBe(segNo);
  });

  it('uses the log/seg rollover of the segment size (64 MiB: 64 segments per log id)', () => {
    const size = 64 * MiB;
    expect(walFileName(1, 63n, size)).toBe('00000001000000000000003F');
    expect(walFileName(1, 64n, size)).toBe('000000010000000100000000');
    expect(segmentNumber('000000010000000100000000', size)).toBe(64n);
    expect(segmentNumber('000000010000000200000005', size)).toBe(2n * 64n + 5n);
    // the same name is a different segment number under the default size
    expect(segmentNumber('000000010000000100000000')).toBe(256n);
  });

  it('round-trips across sizes (1 MiB … 1 GiB)', () => {
    for (const size of [1 * MiB, 16 * MiB, 64 * MiB, 1024 * MiB]) {
      for (const segNo of [0n, 1n, 4095n, 4096n, 123_456n]) {
        expect(segmentNumber(walFileName(3, segNo, size), size)).toBe(segNo);
      }
    }
  });

  it('segmentNumber refuses something that is not a segment name', () => {
    expect(thrown(() => segmentNumber('00000002.history')).code).toBe(ErrorCodes.INTERNAL);
  });

  it('historyFileName pads and upper-cases', () => {
    expect(historyFileName(2)).toBe('00000002.history');
    expect(historyFileName(0xab)).toBe('000000AB.history');
    expect(parseWalFileName(historyFileName(0xab))?.timeline).toBe(0xab);
  });
});

describe('LSNs', () => {
  it('parses and formats low LSNs', () => {
    expect(parseLsn('0/3000060')).toBe(0x3000060n);
    expect(formatLsn(0x3000060n)).toBe('0/3000060');
    expect(formatLsn(0n)).toBe('0/0');
  });

  it('keeps the high half (past 4 GiB of WAL)', () => {
    expect(parseLsn('1/0')).toBe(0x100000000n);
    expect(parseLsn('16/B374D848')).toBe((0x16n << 32n) | 0xb374d848n);
    expect(formatLsn((0x16n << 32n) | 0xb374d848n)).toBe('16/B374D848');
    expect(parseLsn('FFFFFFFF/FFFFFFFF')).toBe(0xffffffffffffffffn);
  });

  it('accepts lower-case input and surrounding whitespace, formats upper-case', () => {
    expect(parseLsn('16/b374d848')).toBe(parseLsn('16/B374D848'));
    expect(formatLsn(parseLsn(' a/bcdef0 \n'))).toBe('A/BCDEF0');
  });

  it.each(['', '0', '3000060', '0/', '/3000060', '0:3000060', '0/3000060/1', 'x/1', '123456789/0', '0/-1'])(
    'refuses %j with E_USAGE',
    (s) => {
      const e = thrown(() => parseLsn(s));
      expect(e.code).toBe(ErrorCodes.USAGE);
      expect(e.hint).toMatch(/0\/3000060/);
      expect(isLsn(s)).toBe(false);
    },
  );

  it('segmentOfLsn / segmentStartLsn', () => {
    expect(segmentOfLsn(parseLsn('0/3000060'))).toBe(3n);
    expect(segmentOfLsn(parseLsn('0/2FFFFFF'))).toBe(2n);
    expect(segmentOfLsn(parseLsn('0/3000000'))).toBe(3n);
    expect(segmentOfLsn(parseLsn('1/0'))).toBe(256n);
    expect(walFileName(1, segmentOfLsn(parseLsn('1/5000028')))).toBe('000000010000000100000005');
    expect(segmentOfLsn(parseLsn('1/5000028'), 64 * MiB)).toBe(65n);
    expect(segmentStartLsn(3n)).toBe(0x3000000n);
    expect(formatLsn(segmentStartLsn(257n))).toBe('1/1000000');
  });
});

describe('readSegmentHeader', () => {
  it('reads every field of a long page header', () => {
    const sysid = 7441234567890123456n;
    const h = readSegmentHeader(
      longHeader({
        tli: 3,
        pageaddr: 0x1_05000000n,
        sysid,
        segSize: 64 * MiB,
        blcksz: 8192,
        info: 0x0002 | 0x0004,
      }),
    );
    expect(h).toEqual({
      magic: 0xd110,
      timeline: 3,
      pageAddress: 0x1_05000000n,
      systemIdentifier: '7441234567890123456',
      segmentSize: 64 * MiB,
      blockSize: 8192,
    });
  });

  it('keeps a system identifier above 2^63 exact (unsigned)', () => {
    const h = readSegmentHeader(longHeader({ sysid: 0xfedcba9876543210n }, 8192));
    expect(h?.systemIdentifier).toBe(0xfedcba9876543210n.toString());
  });

  it('is undefined for a short page header (no XLP_LONG_HEADER)', () => {
    expect(readSegmentHeader(longHeader({ info: 0x0000 }))).toBeUndefined();
    expect(readSegmentHeader(longHeader({ info: 0x0001 /* XLP_FIRST_IS_CONTRECORD */ }))).toBeUndefined();
  });

  it('is undefined for a buffer shorter than the long header', () => {
    expect(readSegmentHeader(longHeader({}).subarray(0, 39))).toBeUndefined();
    expect(readSegmentHeader(Buffer.alloc(0))).toBeUndefined();
  });
});

describe('systemIdentifierFromControlFile', () => {
  it('reads the first 8 bytes as an unsigned little-endian integer', () => {
    const b = Buffer.alloc(8192);
    b.writeBigUInt64LE(7441234567890123456n, 0);
    b.writeUInt32LE(1300, 8); // pg_control_version follows; must not leak in
    expect(systemIdentifierFromControlFile(b)).toBe('7441234567890123456');
  });

  it('refuses a file shorter than 8 bytes', () => {
    expect(thrown(() => systemIdentifierFromControlFile(Buffer.alloc(7))).code).toBe(ErrorCodes.INTERNAL);
  });
});

describe('parseTimelineHistory', () => {
  it('parses what PostgreSQL writes', () => {
    expect(parseTimelineHistory('1\t0/3000060\tno recovery target specified\n')).toEqual([
      { timeline: 1, switchLsn: '0/3000060' },
    ]);
  });

  it('parses several ancestors, free-text reasons, blank lines and comments', () => {
    const text = [
      '# comment',
      '1\t0/3000060\tno recovery target specified',
      '',
      '   ',
      '2\t0/5000100\tbefore 2026-11-25 14:00:00.123456+00',
      '3\t1/a0000d8\tat restore point "before\tmigration"',
      '',
    ].join('\n');
    expect(parseTimelineHistory(text)).toEqual([
      { timeline: 1, switchLsn: '0/3000060' },
      { timeline: 2, switchLsn: '0/5000100' },
      { timeline: 3, switchLsn: '1/A0000D8' },
    ]);
  });

  it('accepts CRLF line endings', () => {
    expect(parseTimelineHistory('1\t0/3000060\treason\r\n')).toEqual([
      { timeline: 1, switchLsn: '0/3000060' },
    ]);
  });

  it('is empty for an empty file', () => {
    expect(parseTimelineHistory('')).toEqual([]);
    expect(parseTimelineHistory('\n\n')).toEqual([]);
  });

  it.each([
    ['no LSN', '1\n'],
    ['bad LSN', '1\t0-3000060\treason\n'],
    ['non-numeric timeline', 'one\t0/3000060\treason\n'],
    ['negative timeline', '-1\t0/3000060\treason\n'],
    ['good line then garbage', '1\t0/3000060\treason\nnot a history line\n'],
  ])('refuses a malformed file (%s) with E_INTEGRITY', (_what, text) => {
    expect(thrown(() => parseTimelineHistory(text)).code).toBe(ErrorCodes.INTEGRITY);
  });
});
