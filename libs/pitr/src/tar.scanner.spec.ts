import { Readable } from 'node:stream';
import { ErrorCodes } from '@dbcrate/core';
import { backupWalRange, parseBackupLabel, parseManifestWalRanges, TarScanner } from './tar.scanner';

/** A minimal ustar writer (what PostgreSQL's tarCreateHeader produces), for test archives. */
function header(name: string, size: number, type = '0', opts: { base256?: boolean; prefix?: string } = {}) {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write('0000600\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  if (opts.base256) {
    h[124] = 0x80;
    h.writeBigUInt64BE(BigInt(size), 128);
  } else {
    h.write(size.toString(8).padStart(11, '0') + '\0', 124);
  }
  h.write('00000000000\0', 136);
  h.write(type, 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  if (opts.prefix) h.write(opts.prefix, 345, 155, 'utf8');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  return h;
}

function entry(
  name: string,
  content: Buffer | string,
  type = '0',
  opts: { base256?: boolean; prefix?: string } = {},
) {
  const data = Buffer.from(content);
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([header(name, data.length, type, opts), data, pad]);
}

const LABEL = [
  'START WAL LOCATION: 0/2000028 (file 000000010000000000000002)',
  'CHECKPOINT LOCATION: 0/2000060',
  'BACKUP METHOD: streamed',
  'BACKUP FROM: primary',
  'START TIME: 2026-11-25 11:45:12 UTC',
  'LABEL: dbcrate 20261125T114512.345Z',
  'START TIMELINE: 1',
  '',
].join('\n');

function manifest(
  files: number,
  ranges = '{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }',
) {
  const lines = Array.from(
    { length: files },
    (_v, i) =>
      `{ "Path": "base/1/${1000 + i}", "Size": 8192, "Last-Modified": "2026-11-25 11:45:12 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "0badc0de" }`,
  );
  return (
    '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n' +
    lines.join(',\n') +
    `\n],\n"WAL-Ranges": [\n${ranges}\n],\n"Manifest-Checksum": "${'ab'.repeat(32)}"}\n`
  );
}

async function scan(
  archive: Buffer,
  chunkSizes: number[],
  want: ConstructorParameters<typeof TarScanner>[0],
) {
  const chunks: Buffer[] = [];
  for (let at = 0, k = 0; at < archive.length; k++) {
    const n = chunkSizes[k % chunkSizes.length];
    chunks.push(archive.subarray(at, at + n));
    at += n;
  }
  const scanner = new TarScanner(want);
  const out: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    Readable.from(chunks)
      .pipe(scanner)
      .on('data', (c: Buffer) => out.push(c))
      .on('end', resolve)
      .on('error', reject);
  });
  return { scanner, out: Buffer.concat(out) };
}

describe('TarScanner', () => {
  const bigManifest = manifest(20000); // ~2.8 MB: only its end is kept
  const longPath = `base/16384/${'x'.repeat(120)}`;
  const archive = Buffer.concat([
    entry('backup_label', LABEL),
    entry('tablespace_map', ''),
    entry('global/', '', '5'),
    entry('global/pg_control', Buffer.alloc(8192, 7)),
    entry('PG_VERSION', '15\n', '0', { base256: true }),
    entry('pg_wal/', '', '5'),
    entry('././@LongLink', longPath + '\0', 'L'),
    entry(longPath.slice(0, 100), Buffer.alloc(1000, 1)),
    entry('1234', Buffer.alloc(513, 2), '0', { prefix: 'base/16384' }),
    entry('backup_manifest', bigManifest),
    Buffer.alloc(1024), // end-of-archive
    Buffer.alloc(10240 - 1024), // record padding
  ]);
  const want = {
    backup_label: { maxBytes: 64 * 1024 },
    backup_manifest: { maxBytes: 64 * 1024, keep: 'tail' as const },
    PG_VERSION: { maxBytes: 100 },
    'base/16384/1234': { maxBytes: 10 },
    [longPath]: { maxBytes: 5000 },
    tablespace_map: { maxBytes: 10 },
  };

  it.each([[[1, 2, 509]], [[511, 513, 7]], [[512]], [[65536]], [[archive.length]]])(
    'passes everything through and captures the members (chunks %j)',
    async (sizes) => {
      const { scanner, out } = await scan(archive, sizes, want);
      expect(out.equals(archive)).toBe(true);
      expect(scanner.ok).toBe(true);
      expect(scanner.members).toBe(9);
      expect(scanner.captured.get('backup_label')?.toString()).toBe(LABEL);
      expect(scanner.captured.get('PG_VERSION')?.toString()).toBe('15\n');
      expect(scanner.captured.get('base/16384/1234')).toEqual(Buffer.alloc(10, 2));
      expect(scanner.captured.get(longPath)).toEqual(Buffer.alloc(1000, 1));
      expect(scanner.captured.get('tablespace_map')).toEqual(Buffer.alloc(0));
      const tail = scanner.captured.get('backup_manifest')!;
      expect(tail.length).toBe(64 * 1024);
      expect(tail.equals(Buffer.from(bigManifest).subarray(-64 * 1024))).toBe(true);
      expect(backupWalRange(LABEL, tail.toString())).toEqual({
        startLsn: '0/2000028',
        stopLsn: '0/2000100',
        timeline: 1,
        stopTimeline: 1,
      });
    },
  );

  it('gives up (but still passes the bytes) on something that is not tar', async () => {
    const junk = Buffer.alloc(4096, 0x41);
    const { scanner, out } = await scan(junk, [1000], want);
    expect(out.equals(junk)).toBe(true);
    expect(scanner.ok).toBe(false);
    expect(scanner.captured.size).toBe(0);
  });
});

describe('backup WAL range', () => {
  it('reads backup_label', () => {
    expect(parseBackupLabel(LABEL)).toEqual({
      startLsn: '0/2000028',
      timeline: 1,
      label: 'dbcrate 20261125T114512.345Z',
    });
  });

  it('reads every WAL range of a manifest', () => {
    const text = manifest(
      2,
      '{ "Timeline": 2, "Start-LSN": "0/3000000", "End-LSN": "0/30000d8" },\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000000" }',
    );
    expect(parseManifestWalRanges(text)).toHaveLength(2);
    expect(backupWalRange(LABEL, text)).toEqual({
      startLsn: '0/2000028',
      stopLsn: '0/30000D8',
      timeline: 1,
      stopTimeline: 2,
    });
  });

  it('refuses a backup without a manifest, or with ranges it cannot read', () => {
    expect(() => backupWalRange(LABEL, undefined)).toThrow(/no backup_manifest/);
    expect(() => backupWalRange(LABEL, manifest(1, '{ "Timeline": 1, "Start-LSN": "x" }'))).toThrow(
      /no readable WAL-Ranges/,
    );
    expect(() => backupWalRange(LABEL, '{"Files": []')).toThrow(
      expect.objectContaining({ code: ErrorCodes.DB_TOOL_FAILED }),
    );
  });

  it('refuses a label that disagrees with the manifest', () => {
    const other = LABEL.replace('0/2000028', '0/2000060');
    expect(() => backupWalRange(other, manifest(1))).toThrow(/disagree/);
  });
});
