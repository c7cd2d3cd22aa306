/**
 * The WAL channel on every storage backend: push (and its idempotence and conflict rules),
 * fetch, history records and the archive index, against s3rver, a real sshd and a local
 * folder. Segments are synthetic but carry a real long page header (system identifier,
 * segment size), which is all wal-push inspects.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ErrorCodes } from '@dbcrate/core';
import {
  generateKeyPair,
  loadDecryptionKey,
  loadRecipientKey,
  type DecryptionKey,
  type RecipientKey,
} from '@dbcrate/crypto';
import { openStorage, type Storage } from '@dbcrate/storage';
import { startS3rver, startSshd, type S3rverHarness, type SshdHarness } from '@dbcrate/testing';
import { sealWal, WalArchiver } from './wal.archive';
import { fetchWal } from './wal.fetch';
import { DEFAULT_WAL_SEGMENT_SIZE } from './wal.names';
import { indexArchive } from './windows';

const SYSID = '7400000000000000042';

function fakeSegment(timeline: number, seed: number): Buffer {
  const buf = Buffer.alloc(DEFAULT_WAL_SEGMENT_SIZE);
  buf.writeUInt16LE(0xd110, 0); // XLOG_PAGE_MAGIC of PostgreSQL 15
  buf.writeUInt16LE(0x0002, 2); // XLP_LONG_HEADER
  buf.writeUInt32LE(timeline, 4);
  buf.writeBigUInt64LE(BigInt(SYSID), 24);
  buf.writeUInt32LE(DEFAULT_WAL_SEGMENT_SIZE, 32);
  buf.writeUInt32LE(8192, 36);
  randomBytes(4096).copy(buf, 8192); // some incompressible content
  buf.writeUInt32LE(seed, 40);
  return buf;
}

let recipients: RecipientKey[];
let keys: DecryptionKey[];
let work: string;
let s3: S3rverHarness;
let sshd: SshdHarness;

beforeAll(async () => {
  const pair = await generateKeyPair({ name: 'wal-backends', passphrase: 'backends-pass' });
  recipients = [await loadRecipientKey(pair.publicArmored)];
  keys = [await loadDecryptionKey(pair.privateArmored, 'backends-pass')];
  work = mkdtempSync(join(tmpdir(), 'dbcrate-wal-backends-'));
  s3 = await startS3rver({ buckets: ['wal-backends'] });
  sshd = await startSshd();
}, 120_000);

afterAll(async () => {
  await s3?.stop();
  await sshd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const backends: [string, () => Promise<Storage>][] = [
  ['file://', () => openStorage(`file://${join(work, 'dest')}`)],
  ['s3:// (s3rver)', () => openStorage(s3.url('wal'), { env: { ...process.env, ...s3.env } })],
  ['sftp:// (sshd)', () => openStorage(sshd.url('wal'))],
];

describe.each(backends)('WAL channel on %s', (name, open) => {
  let storage: Storage;
  let dir: string;
  const db = 'walbackends';

  beforeAll(async () => {
    storage = await open();
    dir = join(work, name.replace(/[^a-z0-9]/gi, '_'), 'pg_wal');
    await mkdir(dir, { recursive: true });
  });
  afterAll(async () => {
    await storage?.close();
  });

  const archiver = () =>
    new WalArchiver({
      storage,
      databaseId: db,
      systemIdentifier: SYSID,
      seal: (plain) => sealWal(plain, { recipients }),
    });

  it('pushes a segment once, recognises the same content, refuses different content', async () => {
    const seg = fakeSegment(1, 1);
    const path = join(dir, '000000010000000000000001');
    await writeFile(path, seg);
    expect((await archiver().push(path)).outcome).toBe('archived');
    expect((await archiver().push(path)).outcome).toBe('already-archived');

    const other = join(dir, 'other');
    await mkdir(other, { recursive: true });
    const changed = Buffer.from(seg);
    changed[9000] ^= 0xff;
    await writeFile(join(other, '000000010000000000000001'), changed);
    await expect(archiver().push(join(other, '000000010000000000000001'))).rejects.toMatchObject({
      code: ErrorCodes.WAL_CONFLICT,
    });

    const back = await fetchWal({ storage, databaseId: db, keys }, '000000010000000000000001');
    expect(back.equals(seg)).toBe(true);
  });

  it('archives a history file with its timeline record, and the index sees everything', async () => {
    const seg2 = join(dir, '000000010000000000000002');
    await writeFile(seg2, fakeSegment(1, 2));
    await archiver().push(seg2);
    const history = join(dir, '00000002.history');
    await writeFile(history, '1\t0/2000060\tno recovery target specified\n');
    expect((await archiver().push(history)).outcome).toBe('archived');

    const index = await indexArchive(storage, db);
    expect([...index.files.keys()].sort()).toEqual([
      '000000010000000000000001',
      '000000010000000000000002',
      '00000002.history',
    ]);
    expect(index.histories.get(2)).toEqual([{ timeline: 1, switchLsn: '0/2000060' }]);
    expect(index.conflicts).toEqual([]);
  });

  it('reports a WAL file that is not archived as not found', async () => {
    await expect(
      fetchWal({ storage, databaseId: db, keys }, '000000010000000000000009'),
    ).rejects.toMatchObject({
      code: ErrorCodes.WAL_NOT_FOUND,
    });
  });
});
