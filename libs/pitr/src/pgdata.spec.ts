import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  baseObjects,
  baseStoredSize,
  parseBaseManifest,
  serializeBaseManifest,
  type BaseManifestV2,
} from './base.manifest';
import {
  distributeFiles,
  postgresBackupManifest,
  READ_CHUNK,
  readFileMember,
  type DataEntry,
} from './pgdata.files';
import { checksumOf, defaultManifestChecksum, fileChecksum } from './pgdata.checksum';
import { contentPadding, TAR_END, tarHeader } from './pgdata.tar';
import { TarGuard } from './tar.guard';
import { baseBackupPartKey, parseBaseKey } from './pitr.layout';

const v2 = (): BaseManifestV2 => ({
  format: 'dbcrate.base.manifest',
  formatVersion: 2,
  kind: 'physical',
  databaseId: 'db',
  backupId: '20261125T114512.345Z',
  dbcrateVersion: '0.1.0',
  startedAt: '2026-11-25T11:45:12.345Z',
  finishedAt: '2026-11-25T11:46:01.002Z',
  startLsn: '0/2000028',
  stopLsn: '0/2000100',
  timeline: 1,
  startWalFile: '000000010000000000000002',
  stopWalFile: '000000010000000000000002',
  server: { version: '15.20', versionNum: 150020, major: 15, systemIdentifier: '7441234567890123456' },
  walSegmentSize: 16 * 1024 * 1024,
  tool: { name: 'dbcrate', version: '0.1.0' },
  objects: [0, 1].map((k) => ({
    key: baseBackupPartKey('db', '20261125T114512.345Z', k),
    storedSize: 100 + k,
    sha256: 'a'.repeat(64),
    plaintextSize: 1000,
  })),
  files: [{ path: 'PG_VERSION', size: 3, mtime: 1, part: 1 }],
  compression: { codec: 'zstd', implementation: 'native', level: 3 },
  encryption: { cipher: 'openpgp', recipients: [{ fingerprint: 'F', encryptionKeyIds: ['K'] }] },
  tablespaces: [],
});

describe('manifest v2 and the pgdata layout', () => {
  it('round-trips a v2 manifest and lists its parts', () => {
    const m = parseBaseManifest(serializeBaseManifest(v2()), 'k');
    expect(baseObjects(m).map((o) => o.key)).toEqual([
      'db/base/20261125T114512.345Z/data.0.tar.zst.pgp',
      'db/base/20261125T114512.345Z/data.1.tar.zst.pgp',
    ]);
    expect(baseStoredSize(m)).toBe(201);
    expect(parseBaseKey(baseBackupPartKey('db', '20261125T114512.345Z', 12))).toMatchObject({ kind: 'data' });
  });

  it('refuses a file naming a part that does not exist', () => {
    const m = v2();
    m.files![0].part = 2;
    expect(() => parseBaseManifest(JSON.stringify(m), 'k')).toThrow(/part that does not exist/);
  });

  it('balances files over the parts by bytes, every directory in part 0', () => {
    const e = (path: string, size: number, type: 'file' | 'dir' = 'file'): DataEntry => ({
      path,
      type,
      size,
      mode: 0o600,
      uid: 0,
      gid: 0,
      mtime: 0,
    });
    const parts = distributeFiles([e('base', 0, 'dir'), e('a', 100), e('b', 60), e('c', 50), e('d', 10)], 2);
    expect(parts[0].map((x) => x.path)).toEqual(['base', 'a', 'd']);
    expect(parts[1].map((x) => x.path)).toEqual(['b', 'c']);
  });
});

describe('tar members', () => {
  it('writes headers GNU tar and the tar guard read, long names through pax', async () => {
    const long = `base/${'x'.repeat(90)}/${'y'.repeat(120)}`;
    const body = Buffer.from('hello\n');
    const chunks = [
      tarHeader({ path: 'base', type: 'dir', size: 0, mode: 0o700, uid: 0, gid: 0, mtime: 1700000000 }),
      tarHeader({
        path: 'base/short',
        type: 'file',
        size: body.length,
        mode: 0o600,
        uid: 0,
        gid: 0,
        mtime: 1,
      }),
      body,
      contentPadding(body.length),
      tarHeader({ path: long, type: 'file', size: body.length, mode: 0o600, uid: 0, gid: 0, mtime: 1 }),
      body,
      contentPadding(body.length),
      TAR_END,
    ];
    const tar = Buffer.concat(chunks);
    const guard = new TarGuard();
    await pipeline(Readable.from([tar]), guard, new Writable({ write: (_c, _e, cb) => cb() }));
    expect(guard.entries).toBe(3);
    const dir = mkdtempSync(join(tmpdir(), 'dbcrate-pgdata-tar-'));
    try {
      writeFileSync(join(dir, 'a.tar'), tar);
      expect(execFileSync('tar', ['-tvf', join(dir, 'a.tar')]).toString()).toContain(long);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes a backup_manifest whose checksum covers all but its last line', () => {
    const text = postgresBackupManifest(
      [{ path: 'PG_VERSION', size: 3, mtime: 0, checksum: 'b'.repeat(64) }],
      { timeline: 1, startLsn: '0/2000028', stopLsn: '0/2000100' },
      'SHA256',
    ).toString();
    const doc = JSON.parse(text) as {
      Files: { 'Checksum-Algorithm': string }[];
      'Manifest-Checksum': string;
    };
    expect(doc.Files).toHaveLength(1);
    expect(doc.Files[0]['Checksum-Algorithm']).toBe('SHA256');
    const head = text.slice(0, text.lastIndexOf('"Manifest-Checksum"'));
    const { createHash } = jest.requireActual<typeof import('node:crypto')>('node:crypto');
    expect(createHash('sha256').update(head).digest('hex')).toBe(doc['Manifest-Checksum']);
  });

  // the prebuilt addon exists for this platform: were it not to load here, backups would
  // quietly pay for SHA-256
  const crcHere = process.platform === 'linux' && process.arch === 'x64';

  (crcHere ? it : it.skip)(
    'spells CRC-32C as PostgreSQL does (its bytes in memory order, hex), fed in pieces or whole',
    () => {
      // the CRC-32C check value of "123456789" is 0xE3069283 (RFC 3720)
      expect(defaultManifestChecksum()).toEqual({ algorithm: 'CRC32C' });
      expect(checksumOf('CRC32C', Buffer.from('123456789'))).toBe('839206e3');
      const c = fileChecksum('CRC32C');
      for (const piece of ['1234', '', '56789']) c.update(Buffer.from(piece));
      expect(c.digest()).toBe('839206e3');
      expect(checksumOf('CRC32C', Buffer.alloc(0))).toBe('00000000');
      expect(checksumOf('SHA256', Buffer.from('abc'))).toBe(
        'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
      );
      const manifest = postgresBackupManifest(
        [{ path: 'PG_VERSION', size: 9, mtime: 0, checksum: '839206e3' }],
        { timeline: 1, startLsn: '0/2000028', stopLsn: '0/2000100' },
        'CRC32C',
      ).toString();
      expect(manifest).toContain('"Checksum-Algorithm": "CRC32C", "Checksum": "839206e3"');
    },
  );

  it.each(['CRC32C', 'SHA256'] as const)(
    'checksums a file read in chunks with %s, over what it stored (across a chunk boundary, empty)',
    async (algorithm) => {
      if (algorithm === 'CRC32C' && !crcHere) return;
      const dir = mkdtempSync(join(tmpdir(), 'pgdata-sum-'));
      try {
        const body = Buffer.alloc(READ_CHUNK + 3);
        for (let i = 0; i < body.length; i++) body[i] = (i * 131 + (i >> 9)) & 0xff;
        for (const [name, content] of [
          ['big', body],
          ['empty', Buffer.alloc(0)],
        ] as const) {
          const abs = join(dir, name);
          writeFileSync(abs, content);
          const entry: DataEntry = {
            path: name,
            type: 'file',
            size: content.length,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime: 0,
            abs,
          };
          const chunks: Buffer[] = [];
          const gen = readFileMember(entry, { checksum: algorithm, reuse: Buffer.alloc(READ_CHUNK) });
          let r = await gen.next();
          for (; !r.done; r = await gen.next()) chunks.push(Buffer.from(r.value));
          const stored = r.value!;
          expect(stored.size).toBe(content.length);
          // the content stored is the tar member between its header and its padding
          const all = Buffer.concat(chunks);
          expect(all.subarray(512, 512 + content.length).equals(content)).toBe(true);
          const { createHash } = jest.requireActual<typeof import('node:crypto')>('node:crypto');
          const want =
            algorithm === 'SHA256'
              ? createHash('sha256').update(content).digest('hex')
              : (() => {
                  const b = Buffer.alloc(4);
                  b.writeUInt32LE(
                    jest.requireActual<typeof import('@node-rs/crc32')>('@node-rs/crc32').crc32c(content),
                  );
                  return b.toString('hex');
                })();
          expect(stored.checksum).toBe(want);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it('falls back to SHA-256, saying why, where the native CRC-32C addon does not load', () => {
    try {
      jest.isolateModules(() => {
        jest.doMock('@node-rs/crc32', () => {
          throw new Error('no prebuilt binary for this platform');
        });
        const m = jest.requireActual<typeof import('./pgdata.checksum')>('./pgdata.checksum');
        expect(m.defaultManifestChecksum()).toEqual({
          algorithm: 'SHA256',
          fallback: expect.stringContaining('no prebuilt binary for this platform'),
        });
        expect(() => m.fileChecksum('CRC32C')).toThrow(/not available/);
      });
    } finally {
      jest.dontMock('@node-rs/crc32');
    }
  });
});
