/**
 * Logical backups against a real cluster, stored in a local folder and in s3rver: no false
 * success and no lost object when two backups race, a manifest write fails, the newest
 * snapshot is damaged, the client's clock is wrong, or two database names look alike.
 */
import { mkdtempSync } from 'node:fs';
import { readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { getCodec } from '@dbcrate/compression';
import {
  generateKeyPair,
  getCipher,
  loadDecryptionKey,
  loadRecipientKey,
  type DecryptionKey,
  type RecipientKey,
} from '@dbcrate/crypto';
import { openStorage, readObject, type Storage } from '@dbcrate/storage';
import {
  sampleDatabase,
  startPgCluster,
  startS3rver,
  type PgCluster,
  type S3rverHarness,
} from '@dbcrate/testing';
import { runBackup, type BackupResult } from './backup.pipeline';
import { runTool } from '@dbcrate/plumbing';
import { dumpKeys } from './layout';
import { snapshotIdFor } from '@dbcrate/plumbing';
import { listSnapshots, resolveSnapshot } from './snapshots';
import { storeToolOutput } from '@dbcrate/plumbing';

async function caught(p: Promise<unknown>): Promise<DbcrateError> {
  try {
    await p;
  } catch (e) {
    return e as DbcrateError;
  }
  throw new Error('expected a rejection');
}

async function keysUnder(storage: Storage, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix)) out.push(o.key);
  return out.sort();
}

/** A real storage whose put of one kind of key fails (a manifest write refused by the destination). */
/** A real storage whose puts of matching keys fail: before writing, or (`afterCommit`) once written. */
function failingPuts(storage: Storage, matches: (key: string) => boolean, afterCommit = false): Storage {
  return new Proxy(storage, {
    get(target, prop, receiver) {
      if (prop === 'put') {
        return async (key: string, body: Readable, opts?: unknown) => {
          if (matches(key)) {
            if (afterCommit) await target.put(key, body, opts as never);
            else body.resume();
            throw new DbcrateError(ErrorCodes.STORAGE_IO, `cannot write "${key}": injected failure`);
          }
          return target.put(key, body, opts as never);
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('logical backups: no false success', () => {
  let pg: PgCluster;
  let s3: S3rverHarness;
  let dir: string;
  let recipient: RecipientKey;
  let privateKey: DecryptionKey;
  let source: string;

  const fsStorage = async (name: string) => openStorage(`file://${join(dir, name)}`);

  beforeAll(async () => {
    pg = await startPgCluster();
    source = await pg.createDatabase('nofalse_src');
    await sampleDatabase(source, { rows: 500 });
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-nofalse-'));
    const pair = await generateKeyPair({ name: 'no false success', passphrase: 'nofalse-pass-123' });
    recipient = await loadRecipientKey(pair.publicArmored);
    privateKey = await loadDecryptionKey(pair.privateArmored, 'nofalse-pass-123');
    s3 = await startS3rver({ buckets: ['nofalse'] });
  });

  afterAll(async () => {
    await Promise.allSettled([pg?.stop(), s3?.stop(), dir && rm(dir, { recursive: true, force: true })]);
  });

  it.each(['file', 's3'])(
    'two backups started in the same millisecond both succeed, under different ids (%s)',
    async (kind) => {
      const storage =
        kind === 'file'
          ? await fsStorage('same-ms')
          : await openStorage(s3.url('same-ms'), { env: { ...s3.env } });
      try {
        const t = new Date('2026-11-25T11:45:12.345Z');
        const both = await Promise.allSettled(
          [0, 1].map(() =>
            runBackup({ dbUrl: source, storage, recipients: [recipient], databaseId: 'same', now: () => t }),
          ),
        );
        expect(both.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled']);
        const [a, b] = both.map((r) => (r as PromiseFulfilledResult<BackupResult>).value);
        expect(a.manifest.snapshotId).not.toBe(b.manifest.snapshotId);
        expect(a.manifest.snapshotId.startsWith('20261125T114512.345Z-')).toBe(true);
        const list = await listSnapshots(storage);
        expect(list.map((e) => e.status)).toEqual(['complete', 'complete']);
        expect(list.map((e) => e.manifest!.object.sha256).sort()).toEqual(
          [a, b].map((r) => r.manifest.object.sha256).sort(),
        );
      } finally {
        await storage.close();
      }
    },
  );

  it.each([false, true])(
    'sealWorker %s: the object is a zstd-compressed pg_dump archive in OpenPGP',
    async (w) => {
      const storage = await fsStorage(`seal-${w}`);
      try {
        const r = await runBackup({ dbUrl: source, storage, recipients: [recipient], sealWorker: w });
        const stored = await readObject(storage, r.dataKey);
        expect(stored.length).toBe(r.manifest.object.storedSize);
        const plain = await getCodec('zstd').decompressBuffer(
          await getCipher('openpgp').decryptBuffer(stored, [privateKey]),
        );
        expect(plain.subarray(0, 5).toString()).toBe('PGDMP');
        expect(plain.length).toBe(r.manifest.object.plaintextSize);
      } finally {
        await storage.close();
      }
    },
  );

  it.each(['file', 's3'])(
    'a %s upload that loses the name to another writer leaves the other object alone',
    async (kind) => {
      const storage =
        kind === 'file'
          ? await fsStorage('conflict')
          : await openStorage(s3.url('conflict'), { env: { ...s3.env } });
      try {
        const key = dumpKeys('c', snapshotIdFor(new Date(), '00000000'), ['zst', 'pgp']).dataKey;
        const winner = Buffer.from('the winner wrote this first');
        await storage.put(key, Readable.from([winner]), { ifNotExists: true });
        const e = await caught(
          storeToolOutput({
            tool: runTool('/bin/echo', ['the loser'], {}),
            stages: [],
            storage,
            key,
            what: 'backup',
          }),
        );
        expect(e.code).toBe(ErrorCodes.STORAGE_CONFLICT);
        expect((await readObject(storage, key)).equals(winner)).toBe(true);
      } finally {
        await storage.close();
      }
    },
  );

  it('a failed manifest write removes its data object: nothing that looks like a backup stays', async () => {
    const storage = await fsStorage('manifest-fails');
    const e = await caught(
      runBackup({
        dbUrl: source,
        storage: failingPuts(storage, (k) => k.endsWith('.manifest.json')),
        recipients: [recipient],
        databaseId: 'mf',
      }),
    );
    expect(e.message).toContain('injected failure');
    expect(await keysUnder(storage)).toEqual([]);
    expect(await listSnapshots(storage)).toEqual([]);
  });

  it('a refused data upload is reported as such, not as the "Premature close" the other stages see', async () => {
    const storage = await fsStorage('refused-data');
    const refusing = new Proxy(storage, {
      get(target, prop, receiver) {
        if (prop === 'put') {
          return async (key: string, body: Readable) => {
            // as a backend that fails at open: the body is dropped first, the error comes after
            body.destroy();
            await new Promise((r) => setTimeout(r, 50));
            throw new DbcrateError(
              ErrorCodes.STORAGE_DENIED,
              `cannot write "${key}": permission denied (EACCES)`,
            );
          };
        }
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const e = await caught(
      runBackup({ dbUrl: source, storage: refusing, recipients: [recipient], databaseId: 'rd' }),
    );
    expect(e.code).toBe(ErrorCodes.STORAGE_DENIED);
    expect(e.message).toContain('permission denied');
  });

  it('a manifest write that committed but reported a failure leaves no manifest pointing at deleted data', async () => {
    const storage = await fsStorage('manifest-lost-answer');
    const e = await caught(
      runBackup({
        dbUrl: source,
        storage: failingPuts(storage, (k) => k.endsWith('.manifest.json'), true),
        recipients: [recipient],
        databaseId: 'mla',
      }),
    );
    expect(e.message).toContain('injected failure');
    expect(await keysUnder(storage)).toEqual([]);
  });

  it('"latest" follows the server, not a client clock set years ahead', async () => {
    const storage = await fsStorage('skew');
    const skewed = await runBackup({
      dbUrl: source,
      storage,
      recipients: [recipient],
      databaseId: 'skew',
      now: () => new Date('2099-01-01T00:00:00.000Z'),
    });
    await pg.psql(
      'CREATE TABLE after_the_skewed_one (i int); INSERT INTO after_the_skewed_one VALUES (1);',
      'nofalse_src',
    );
    const later = await runBackup({ dbUrl: source, storage, recipients: [recipient], databaseId: 'skew' });
    expect(skewed.manifest.server.startTime).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);
    expect(later.manifest.server.startLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(later.manifest.databaseIdFrom).toBe('option');
    const latest = await resolveSnapshot(storage, 'latest', { databaseId: 'skew' });
    expect(latest.snapshotId).toBe(later.manifest.snapshotId);
    expect((await listSnapshots(storage)).map((e) => e.snapshotId)).toEqual([
      skewed.manifest.snapshotId,
      later.manifest.snapshotId,
    ]);
  });

  it('"latest" refuses when the newest snapshot is damaged, naming it and the newest intact one', async () => {
    const storage = await fsStorage('damaged');
    const older = await runBackup({ dbUrl: source, storage, recipients: [recipient], databaseId: 'dmg' });
    const newest = await runBackup({ dbUrl: source, storage, recipients: [recipient], databaseId: 'dmg' });
    await truncate(join(dir, 'damaged', newest.dataKey), 100);
    const e = await caught(resolveSnapshot(storage, 'latest', { databaseId: 'dmg' }));
    expect(e.code).toBe(ErrorCodes.INTEGRITY);
    expect(e.message).toContain(`dmg/${newest.manifest.snapshotId}`);
    expect(e.message).toContain('damaged');
    expect(e.hint).toContain(`dmg/${older.manifest.snapshotId}`);
    // By id, the intact one is still there for whoever decides to take it.
    expect((await resolveSnapshot(storage, older.manifest.snapshotId)).status).toBe('complete');
  });

  it('old manifests (no server time or LSN) still sort, by their startedAt', async () => {
    const storage = await fsStorage('old-manifests');
    const first = await runBackup({
      dbUrl: source,
      storage,
      recipients: [recipient],
      databaseId: 'old',
      now: () => new Date('2026-11-25T10:00:00.000Z'),
    });
    const second = await runBackup({
      dbUrl: source,
      storage,
      recipients: [recipient],
      databaseId: 'old',
      now: () => new Date('2026-11-25T09:00:00.000Z'), // id says earlier; startedAt is what counts
    });
    for (const [r, startedAt] of [
      [first, '2026-11-25T10:00:00.000Z'],
      [second, '2026-11-25T11:00:00.000Z'],
    ] as const) {
      const file = join(dir, 'old-manifests', r.manifestKey);
      const m = JSON.parse(await readFile(file, 'utf8'));
      delete m.databaseIdFrom;
      delete m.server.startTime;
      delete m.server.startLsn;
      delete m.server.inRecovery;
      m.startedAt = startedAt;
      await writeFile(file, JSON.stringify(m, null, 2));
    }
    const list = await listSnapshots(storage);
    expect(list.map((e) => [e.snapshotId, e.status])).toEqual([
      [first.manifest.snapshotId, 'complete'],
      [second.manifest.snapshotId, 'complete'],
    ]);
    expect((await resolveSnapshot(storage, 'latest')).snapshotId).toBe(second.manifest.snapshotId);
  });

  describe('database ids', () => {
    const names = ['a/b', 'a_b', 'ünï'];
    let storage: Storage;
    const byName = new Map<string, BackupResult>();

    beforeAll(async () => {
      storage = await fsStorage('ids');
      for (const n of names) {
        const url = await pg.createDatabase(n);
        await pg.psql(`CREATE TABLE marker (name text); INSERT INTO marker VALUES ('${n}');`, n);
        byName.set(n, await runBackup({ dbUrl: url, storage, recipients: [recipient] }));
      }
    });

    it('default ids never collide; a safe name keeps its own', async () => {
      const ids = names.map((n) => byName.get(n)!.manifest.databaseId);
      expect(new Set(ids).size).toBe(names.length);
      expect(byName.get('a_b')!.manifest.databaseId).toBe('a_b');
      expect(byName.get('ünï')!.manifest.databaseId).toMatch(/^uni-[0-9a-f]{12}$/);
      for (const n of names) {
        const m = byName.get(n)!.manifest;
        expect(m.databaseIdFrom).toBe('name');
        const latest = await resolveSnapshot(storage, 'latest', { databaseId: m.databaseId });
        expect(latest.manifest.server.database).toBe(n);
      }
    });

    it('a manifest that does not belong to the location it was read from is refused', async () => {
      // Copy a/b's snapshot under a_b, keeping the manifest consistent with its new place
      // except for what names its database.
      const src = byName.get('a/b')!;
      const snapshotId = snapshotIdFor(new Date(), 'ffffffff');
      const target = dumpKeys('a_b', snapshotId, ['zst', 'pgp']);
      const m = JSON.parse((await readObject(storage, src.manifestKey)).toString());
      await storage.put(target.dataKey, await storage.get(src.dataKey));
      const put = async (doc: unknown) =>
        storage.put(target.manifestKey, Readable.from([Buffer.from(JSON.stringify(doc))]));
      await put({ ...m, snapshotId, object: { ...m.object, key: target.dataKey } });
      let e = await caught(resolveSnapshot(storage, `a_b/${snapshotId}`));
      expect(e.code).toBe(ErrorCodes.INTEGRITY);
      expect(e.message).toMatch(/names database id "a_b-[0-9a-f]{12}", but it was read from "a_b"/);

      await put({ ...m, databaseId: 'a_b', snapshotId, object: { ...m.object, key: target.dataKey } });
      e = await caught(resolveSnapshot(storage, `a_b/${snapshotId}`));
      expect(e.code).toBe(ErrorCodes.INTEGRITY);
      expect(e.message).toContain('is of database "a/b"');

      // An archive from before (no databaseIdFrom) may hold both under the old id: "latest" is ambiguous.
      const old = { ...m, databaseId: 'a_b', snapshotId, object: { ...m.object, key: target.dataKey } };
      delete old.databaseIdFrom;
      await put(old);
      expect((await resolveSnapshot(storage, `a_b/${snapshotId}`)).manifest.server.database).toBe('a/b');
      e = await caught(resolveSnapshot(storage, 'latest', { databaseId: 'a_b' }));
      expect(e.code).toBe(ErrorCodes.USAGE);
      expect(e.message).toContain('"a/b"');
      expect(e.message).toContain('"a_b"');
      await storage.delete(target.manifestKey);
      await storage.delete(target.dataKey);
    });

    it('"latest" of an old id is refused once newer dumps of that database live under its new id', async () => {
      const moved = await fsStorage('moved-ids');
      const fresh = await runBackup({
        dbUrl: pg.url('a/b'),
        storage: moved,
        recipients: [recipient],
      });
      // the same database's dump as an older version stored it: old id, no databaseIdFrom
      const snapshotId = snapshotIdFor(new Date(Date.now() - 86_400_000), 'eeeeeeee');
      const target = dumpKeys('a_b', snapshotId, ['zst', 'pgp']);
      const m = JSON.parse((await readObject(moved, fresh.manifestKey)).toString());
      delete m.databaseIdFrom;
      await moved.put(target.dataKey, await moved.get(fresh.dataKey));
      await moved.put(
        target.manifestKey,
        Readable.from([
          Buffer.from(
            JSON.stringify({
              ...m,
              databaseId: 'a_b',
              snapshotId,
              object: { ...m.object, key: target.dataKey },
            }),
          ),
        ]),
      );
      const e = await caught(resolveSnapshot(moved, 'latest', { databaseId: 'a_b' }));
      expect(e.code).toBe(ErrorCodes.USAGE);
      expect(e.message).toContain('stale');
      expect(e.message).toContain(fresh.manifest.databaseId);
      expect((await resolveSnapshot(moved, `a_b/${snapshotId}`)).snapshotId).toBe(snapshotId);
      expect(
        (await resolveSnapshot(moved, 'latest', { databaseId: fresh.manifest.databaseId })).snapshotId,
      ).toBe(fresh.manifest.snapshotId);
    });
  });
});
