/**
 * Races on every backend (local folder, s3rver, real sshd), made deterministic with
 * barriers inside the push: two contents under one WAL name (an old primary and a promoted
 * copy), two clusters on an empty prefix, two writers of one key past the early existence
 * check. At most one is acknowledged and a loser leaves no object. Also: zero-byte objects,
 * empty or malformed history files, truncated .partial files, the segment size recorded.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { ErrorCodes } from '@dbcrate/core';
import {
  generateKeyPair,
  loadDecryptionKey,
  loadRecipientKey,
  type DecryptionKey,
  type RecipientKey,
} from '@dbcrate/crypto';
import { openStorage, readObject, type Storage } from '@dbcrate/storage';
import { startS3rver, startSshd, type S3rverHarness, type SshdHarness } from '@dbcrate/testing';
import { clusterKey, ensureClusterIdentity, readClusterIdentity, walKey } from './pitr.layout';
import { sealWal, sha256Hex, WalArchiver, type WalArchiverOptions } from './wal.archive';
import { fetchWal } from './wal.fetch';
import { indexArchive } from './windows';
import { DEFAULT_WAL_SEGMENT_SIZE } from './wal.names';

const SYSID = '7400000000000000042';

function fakeSegment(seed: number, sysid = SYSID): Buffer {
  const buf = Buffer.alloc(DEFAULT_WAL_SEGMENT_SIZE);
  buf.writeUInt16LE(0xd110, 0); // XLOG_PAGE_MAGIC of PostgreSQL 15
  buf.writeUInt16LE(0x0002, 2); // XLP_LONG_HEADER
  buf.writeUInt32LE(1, 4);
  buf.writeBigUInt64LE(BigInt(sysid), 24);
  buf.writeUInt32LE(DEFAULT_WAL_SEGMENT_SIZE, 32);
  buf.writeUInt32LE(8192, 36);
  randomBytes(4096).copy(buf, 8192);
  buf.writeUInt32LE(seed, 40);
  return buf;
}

/** Resolves for everyone once `n` callers have arrived. */
/** Every barrier's release: a racer that fails opens them all (see settle). */
const releases = new Set<() => void>();

function barrier(n: number): () => Promise<void> {
  let arrived = 0;
  let release!: () => void;
  const all = new Promise<void>((r) => (release = r));
  releases.add(release);
  return async () => {
    if (++arrived === n) release();
    await all;
  };
}

function gate(): { wait: () => Promise<void>; open: () => void } {
  let open!: () => void;
  const p = new Promise<void>((r) => (open = r));
  return { wait: () => p, open };
}

// A racer that fails before a barrier would leave the other waiting there until the test
// times out: its failure opens every barrier, so the test fails on what went wrong.
const settle = <T>(p: Promise<T>) =>
  p.then(
    (v) => ({ ok: true as const, v }),
    (e: { code?: string }) => {
      for (const release of releases) release();
      return { ok: false as const, code: e.code, e };
    },
  );

async function keysUnder(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix)) out.push(o.key);
  return out.sort();
}

let recipients: RecipientKey[];
let keys: DecryptionKey[];
let work: string;
let s3: S3rverHarness;
let s3cond: S3rverHarness;
let sshd: SshdHarness;

beforeAll(async () => {
  const pair = await generateKeyPair({ name: 'wal-race' });
  recipients = [await loadRecipientKey(pair.publicArmored)];
  keys = [await loadDecryptionKey(pair.privateArmored)];
  work = mkdtempSync(join(tmpdir(), 'dbcrate-wal-race-'));
  s3 = await startS3rver({ buckets: ['wal-race'] });
  s3cond = await startS3rver({ buckets: ['wal-race-cond'], conditionalWrites: true });
  sshd = await startSshd();
}, 120_000);

afterAll(async () => {
  await s3?.stop();
  await s3cond?.stop();
  await sshd?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const backends: [string, () => Promise<Storage>][] = [
  ['file://', () => openStorage(`file://${join(work, 'dest')}`)],
  ['s3:// (s3rver)', () => openStorage(s3.url('wal-race'), { env: { ...process.env, ...s3.env } })],
  ['sftp:// (sshd)', () => openStorage(sshd.url('race'))],
];

describe.each(backends)('races on %s', (name, open) => {
  let storage: Storage;
  let dir: string;
  let n = 0;
  const SEG = '000000010000000000000001';

  beforeAll(async () => {
    storage = await open();
    dir = join(work, name.replace(/[^a-z0-9]/gi, '_'));
  });
  afterAll(async () => {
    await storage?.close();
  });

  const archiver = (db: string, extra: Partial<WalArchiverOptions> = {}) =>
    new WalArchiver({
      storage,
      databaseId: db,
      systemIdentifier: SYSID,
      seal: (plain) => sealWal(plain, { recipients }),
      ...extra,
    });

  /** Two versions of one WAL file, in two directories (the old primary's and the copy's). */
  async function twoContents(): Promise<{ db: string; a: string; b: string; segA: Buffer; segB: Buffer }> {
    const db = `race${++n}`;
    const segA = fakeSegment(1);
    const segB = Buffer.from(segA);
    segB[9000] ^= 0xff;
    const a = join(dir, db, 'a', SEG);
    const b = join(dir, db, 'b', SEG);
    await mkdir(join(dir, db, 'a'), { recursive: true });
    await mkdir(join(dir, db, 'b'), { recursive: true });
    await writeFile(a, segA);
    await writeFile(b, segB);
    return { db, a, b, segA, segB };
  }

  it('two contents, both past the pre-check: the first claim wins, the second is refused by the claim check and leaves nothing', async () => {
    const { db, a, b, segA } = await twoContents();
    const both = barrier(2);
    const second = gate();
    const pa = settle(archiver(db, { hooks: { afterPrecheck: both } }).push(a));
    const pb = settle(
      archiver(db, {
        hooks: {
          afterPrecheck: async () => {
            await both();
            await second.wait();
          },
        },
      }).push(b),
    );
    const ra = await pa;
    second.open();
    const rb = await pb;
    expect(ra).toMatchObject({ ok: true, v: { outcome: 'archived' } });
    expect(rb).toMatchObject({ ok: false, code: ErrorCodes.WAL_CONFLICT });
    expect(await keysUnder(storage, `${db}/wal/`)).toEqual([walKey(db, SEG, sha256Hex(segA))]);
    expect((await fetchWal({ storage, databaseId: db, keys }, SEG)).equals(segA)).toBe(true);
  });

  it('two contents that both claim before either checks: both refused, nothing left; a retry then wins', async () => {
    const { db, a, b, segB } = await twoContents();
    // Both past the pre-check before either claims (else the later one is refused by its
    // pre-check and never reaches the second barrier), then both claimed before either checks,
    // and both listed before either acts: a loser removes its claim, and a racer that listed
    // only after that would (rightly) win.
    const hooks = { afterPrecheck: barrier(2), beforeClaimCheck: barrier(2), afterClaimCheck: barrier(2) };
    const [ra, rb] = await Promise.all([
      settle(archiver(db, { hooks }).push(a)),
      settle(archiver(db, { hooks }).push(b)),
    ]);
    expect([ra.ok, rb.ok]).toEqual([false, false]);
    expect([ra, rb].map((r) => !r.ok && r.code)).toEqual([ErrorCodes.WAL_CONFLICT, ErrorCodes.WAL_CONFLICT]);
    expect(await keysUnder(storage, `${db}/wal/`)).toEqual([]);
    // PostgreSQL retries: one of them now goes through alone
    expect((await archiver(db).push(b)).outcome).toBe('archived');
    expect((await fetchWal({ storage, databaseId: db, keys }, SEG)).equals(segB)).toBe(true);
    await expect(archiver(db).push(a)).rejects.toMatchObject({ code: ErrorCodes.WAL_CONFLICT });
  });

  it('the same content pushed twice at once: both acknowledged, one object, no claim left', async () => {
    const { db, a, segA } = await twoContents();
    const both = barrier(2);
    const commit = barrier(2);
    const hooks = { beforeClaimCheck: both, beforeCommit: commit };
    const [ra, rb] = await Promise.all([
      settle(archiver(db, { hooks }).push(a)),
      settle(archiver(db, { hooks }).push(a)),
    ]);
    expect([ra.ok, rb.ok]).toEqual([true, true]);
    expect(await keysUnder(storage, `${db}/wal/`)).toEqual([walKey(db, SEG, sha256Hex(segA))]);
  });

  it('two clusters racing on an empty prefix: never both succeed, no cluster.json from a loser', async () => {
    const db = `race${++n}`;
    // both past the check for a foreign claim before either writes its own (as in the WAL race)
    const hooks = { afterPrecheck: barrier(2), beforeClaimCheck: barrier(2), afterClaimCheck: barrier(2) };
    const [r1, r2] = await Promise.all([
      settle(
        ensureClusterIdentity(
          storage,
          db,
          { systemIdentifier: '111', walSegmentSize: DEFAULT_WAL_SEGMENT_SIZE },
          hooks,
        ),
      ),
      settle(
        ensureClusterIdentity(
          storage,
          db,
          { systemIdentifier: '222', walSegmentSize: DEFAULT_WAL_SEGMENT_SIZE },
          hooks,
        ),
      ),
    ]);
    expect([r1.ok, r2.ok]).toEqual([false, false]);
    expect([r1, r2].map((r) => !r.ok && r.code)).toEqual([
      ErrorCodes.CLUSTER_MISMATCH,
      ErrorCodes.CLUSTER_MISMATCH,
    ]);
    expect(await keysUnder(storage, `${db}/`)).toEqual([]);
    // one alone binds the id; the other is then refused
    const id = { systemIdentifier: '111', walSegmentSize: DEFAULT_WAL_SEGMENT_SIZE };
    expect(await ensureClusterIdentity(storage, db, id)).toMatchObject({ systemIdentifier: '111' });
    await expect(
      ensureClusterIdentity(storage, db, { ...id, systemIdentifier: '222' }),
    ).rejects.toMatchObject({ code: ErrorCodes.CLUSTER_MISMATCH });
    expect(await keysUnder(storage, `${db}/`)).toEqual([clusterKey(db)]);
  });

  it.each([
    ['a small object', 1],
    ['a multipart object', 6 * 1024 * 1024],
  ])(
    'ifNotExists, %s: two writers of one key past the early check — the no-replace step lets one win',
    async (_what, bytes) => {
      // s3rver ignores If-None-Match; this s3rver honours it as AWS S3 does (the WAL claims
      // above do not rely on it), so the conditional PutObject / CompleteMultipartUpload is tested.
      const target = name.startsWith('s3')
        ? await openStorage(`${s3cond.url('cond')}&part_size=5MiB`, {
            env: { ...process.env, ...s3cond.env },
          })
        : storage;
      try {
        const key = `race${++n}/same-key`;
        const commit = barrier(2);
        const bodies = [randomBytes(bytes), randomBytes(bytes)];
        const put = (body: Buffer) =>
          settle(target.put(key, Readable.from([body]), { ifNotExists: true, beforeCommit: commit }));
        const [r1, r2] = await Promise.all(bodies.map(put));
        expect([r1.ok, r2.ok].sort()).toEqual([false, true]);
        expect([r1, r2].find((r) => !r.ok)).toMatchObject({ code: ErrorCodes.STORAGE_CONFLICT });
        const winner = r1.ok ? bodies[0] : bodies[1];
        expect((await readObject(target, key)).equals(winner)).toBe(true);
        expect(await keysUnder(target, `race${n}/`)).toEqual([key]);
      } finally {
        if (target !== storage) await target.close();
      }
    },
  );

  it('a zero-byte object never counts as archived: push replaces it; alone, fetch calls it damaged', async () => {
    const { db, a, segA, segB } = await twoContents();
    await storage.put(walKey(db, SEG, sha256Hex(segA)), Readable.from([Buffer.alloc(0)]));
    await expect(fetchWal({ storage, databaseId: db, keys }, SEG)).rejects.toMatchObject({
      code: ErrorCodes.INTEGRITY,
    });
    expect((await archiver(db).push(a)).outcome).toBe('archived');
    expect((await fetchWal({ storage, databaseId: db, keys }, SEG)).equals(segA)).toBe(true);
    // an empty object of other content is no conflict either, and not fetched
    const db2 = `${db}x`;
    await storage.put(walKey(db2, SEG, sha256Hex(segB)), Readable.from([Buffer.alloc(0)]));
    expect((await archiver(db2).push(a)).outcome).toBe('archived');
    expect((await fetchWal({ storage, databaseId: db2, keys }, SEG)).equals(segA)).toBe(true);
  });

  it('refuses empty or malformed history files and truncated .partial files; nothing stored', async () => {
    const db = `race${++n}`;
    const d = join(dir, db);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, '00000002.history'), '');
    await writeFile(join(d, '00000003.history'), '1\t0/3000000\tx\n5\t0/4000000\ty\n');
    await writeFile(join(d, '00000004.history'), 'not a history\n');
    await writeFile(join(d, `${SEG}.partial`), fakeSegment(7).subarray(0, 1024 * 1024));
    for (const f of ['00000002.history', '00000003.history', '00000004.history', `${SEG}.partial`]) {
      await expect(archiver(db).push(join(d, f))).rejects.toMatchObject({ code: ErrorCodes.INTEGRITY });
    }
    expect(await keysUnder(storage, `${db}/`)).toEqual([]);
  });

  it('a history file pushed first does not fix the segment size; the first segment records it', async () => {
    const db = `race${++n}`;
    const d = join(dir, db);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, '00000002.history'), '1\t0/2000060\tno recovery target specified\n');
    await archiver(db).push(join(d, '00000002.history'));
    expect(await readClusterIdentity(storage, db)).toBeUndefined();
    await writeFile(join(d, SEG), fakeSegment(3));
    await archiver(db).push(join(d, SEG));
    expect(await readClusterIdentity(storage, db)).toMatchObject({
      walSegmentSize: DEFAULT_WAL_SEGMENT_SIZE,
      systemIdentifier: SYSID,
    });
  });

  it('format 1 archives (flat wal/) stay readable, and keep their layout for new pushes', async () => {
    const db = `race${++n}`;
    const legacy = {
      format: 'dbcrate.cluster',
      formatVersion: 1,
      databaseId: db,
      systemIdentifier: SYSID,
      walSegmentSize: DEFAULT_WAL_SEGMENT_SIZE,
      createdAt: new Date().toISOString(),
    };
    await storage.put(clusterKey(db), Readable.from([JSON.stringify(legacy)]));
    const old = fakeSegment(11);
    const oldName = '000000010000000000000002';
    await storage.put(
      walKey(db, oldName, sha256Hex(old), 1),
      Readable.from([Buffer.from(await sealWal(old, { recipients }))]),
    );
    expect((await fetchWal({ storage, databaseId: db, keys }, oldName)).equals(old)).toBe(true);
    const d = join(dir, db);
    await mkdir(d, { recursive: true });
    const next = fakeSegment(12);
    await writeFile(join(d, '000000010000000000000003'), next);
    const r = await archiver(db).push(join(d, '000000010000000000000003'));
    expect(r.key).toBe(walKey(db, '000000010000000000000003', sha256Hex(next), 1));
    // a different file under the old name is still refused
    await writeFile(join(d, oldName), fakeSegment(13));
    await expect(archiver(db).push(join(d, oldName))).rejects.toMatchObject({
      code: ErrorCodes.WAL_CONFLICT,
    });
    const index = await indexArchive(storage, db);
    expect([...index.files.keys()].sort()).toEqual([oldName, '000000010000000000000003']);
  });

  it('format 2: a push lists only the partition of its WAL file, however big the archive', async () => {
    const db = `race${++n}`;
    const d = join(dir, db);
    await mkdir(d, { recursive: true });
    const prefixes: string[] = [];
    const counting = new Proxy(storage, {
      get(target, prop, recv) {
        if (prop === 'list')
          return (prefix: string) => {
            prefixes.push(prefix);
            return target.list(prefix);
          };
        const v = Reflect.get(target, prop, recv) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const a = new WalArchiver({
      storage: counting,
      databaseId: db,
      systemIdentifier: SYSID,
      seal: (plain) => sealWal(plain, { recipients }),
    });
    await writeFile(join(d, SEG), fakeSegment(21));
    await a.push(join(d, SEG));
    prefixes.length = 0;
    const second = '0000000100000000000000A7';
    await writeFile(join(d, second), fakeSegment(22));
    expect((await a.push(join(d, second))).key).toMatch(new RegExp(`^${db}/wal/0000000100000000/${second}-`));
    expect(prefixes).toEqual(Array(3).fill(`${db}/wal/0000000100000000/${second}-`));
    expect(await readClusterIdentity(storage, db)).toMatchObject({ formatVersion: 2 });
  });
});
