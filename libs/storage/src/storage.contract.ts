/**
 * The one storage contract every backend passes (like WAL-G's RunFolderTest). An
 * integration spec calls runStorageContract once per backend with a setup that opens a
 * fresh, empty destination. Test-only: not exported from the library's index.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { Storage } from './storage';
import { probeStorage, PROBE_PREFIX } from './storage.probe';
import { isTempName } from './storage.util';

export interface StorageContractSetup {
  storage: Storage;
  teardown: () => Promise<void>;
  /**
   * What a failed or aborted put could leave behind in the backend itself, beyond what
   * `list` shows: temp files on disk, open multipart uploads. Must be empty after each put.
   */
  leftovers?: () => Promise<string[]>;
}

export interface StorageContractOptions {
  /** Size of the "well over one part" object; default 12 MiB (configure 5 MiB parts for S3). */
  bigObjectSize?: number;
}

const MiB = 1024 * 1024;

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** A stream of `data` in uneven chunks, so part and write boundaries fall mid-chunk. */
export function chunkedStream(data: Buffer, maxChunk = 100_003): Readable {
  let off = 0;
  let i = 0;
  return new Readable({
    read() {
      if (off >= data.length) {
        this.push(null);
        return;
      }
      const n = Math.min(data.length - off, 1 + ((i++ * 7919) % maxChunk));
      this.push(data.subarray(off, off + n));
      off += n;
    },
  });
}

/** Emits `before` bytes, then fails with `error` (a producer dying mid-backup). */
export function failingStream(before: number, error = new Error('source exploded')): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= before) {
        this.destroy(error);
        return;
      }
      const n = Math.min(256 * 1024, before - sent);
      sent += n;
      this.push(randomBytes(n));
    },
  });
}

/** An endless slow stream; `onBytes` sees the running total (to abort at a chosen point). */
export function slowStream(onBytes: (total: number) => void, chunk = 512 * 1024, delayMs = 5): Readable {
  let total = 0;
  return new Readable({
    read() {
      setTimeout(() => {
        total += chunk;
        this.push(randomBytes(chunk));
        onBytes(total);
      }, delayMs);
    },
  });
}

export async function readAll(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r as AsyncIterable<Buffer>) parts.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
  return Buffer.concat(parts);
}

export async function listKeys(storage: Storage, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of storage.list(prefix)) keys.push(o.key);
  return keys.sort();
}

export async function expectCode(p: Promise<unknown>, code: string): Promise<DbcrateError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(DbcrateError);
  const err = caught as DbcrateError;
  if (err.code !== code) throw new Error(`expected ${code}, got ${err.code}: ${err.message}`);
  return err;
}

export function runStorageContract(
  name: string,
  setup: () => Promise<StorageContractSetup>,
  opts: StorageContractOptions = {},
): void {
  const bigSize = opts.bigObjectSize ?? 12 * MiB + 12_345;

  describe(`storage contract: ${name}`, () => {
    let ctx: StorageContractSetup;
    let s: Storage;

    beforeAll(async () => {
      ctx = await setup();
      s = ctx.storage;
    }, 120_000);

    afterAll(async () => {
      await ctx?.storage.close();
      await ctx?.teardown();
    });

    const expectNoLeftovers = async (): Promise<void> => {
      expect((await ctx.leftovers?.()) ?? []).toEqual([]);
    };

    it.each([
      ['0 bytes', 0],
      ['1 byte', 1],
      ['1 MiB', MiB],
      ['well over one part', bigSize],
    ])('put/get round trip of %s is byte-exact', async (_label, size) => {
      const data = randomBytes(size as number);
      const key = `roundtrip/${size}.bin`;
      const res = await s.put(key, chunkedStream(data));
      expect(res.size).toBe(size);
      const back = await readAll(await s.get(key));
      expect(back.length).toBe(size);
      expect(sha256(back)).toBe(sha256(data));
      const info = await s.head(key);
      expect(info).toMatchObject({ key, size });
      await expectNoLeftovers();
    });

    it('stores string chunks (object-mode sources) as UTF-8', async () => {
      await s.put('strings/a.json', Readable.from(['{"a":', '"é"}']));
      expect((await readAll(await s.get('strings/a.json'))).toString('utf8')).toBe('{"a":"é"}');
    });

    it('head of a missing key is undefined, get of a missing key is E_STORAGE_NOT_FOUND', async () => {
      expect(await s.head('missing/nothing.bin')).toBeUndefined();
      await expectCode(s.get('missing/nothing.bin'), ErrorCodes.STORAGE_NOT_FOUND);
    });

    it('lists by prefix, nested keys included, temp files never', async () => {
      const keys = ['list/a/1', 'list/a/2', 'list/a/b/3', 'list/ab', 'list/c/d/e/4'];
      for (const k of keys) await s.put(k, Readable.from([Buffer.from(k)]));
      expect(await listKeys(s, 'list/')).toEqual(keys.slice().sort());
      expect(await listKeys(s, 'list/a/')).toEqual(['list/a/1', 'list/a/2', 'list/a/b/3']);
      expect(await listKeys(s, 'list/a')).toEqual(['list/a/1', 'list/a/2', 'list/a/b/3', 'list/ab']);
      expect(await listKeys(s, 'list/c/d/')).toEqual(['list/c/d/e/4']);
      expect(await listKeys(s, 'list/zzz')).toEqual([]);
      expect(await listKeys(s, 'nothing-here/')).toEqual([]);
      const all = [];
      for await (const o of s.list('')) all.push(o);
      expect(all.map((o) => o.key)).toEqual(expect.arrayContaining(keys));
      expect(all.filter((o) => isTempName(o.key.split('/').pop()!))).toEqual([]);
      const one = all.find((o) => o.key === 'list/a/b/3')!;
      expect(one.size).toBe('list/a/b/3'.length);
    });

    it('deletes; deleting a missing key is fine', async () => {
      await s.put('del/x', Readable.from([Buffer.from('x')]));
      await s.delete('del/x');
      expect(await s.head('del/x')).toBeUndefined();
      await expectCode(s.get('del/x'), ErrorCodes.STORAGE_NOT_FOUND);
      await expect(s.delete('del/x')).resolves.toBeUndefined();
      await expect(s.delete('del/never/was')).resolves.toBeUndefined();
      expect(await listKeys(s, 'del/')).toEqual([]);
    });

    it('a plain put replaces; ifNotExists refuses with E_STORAGE_CONFLICT and leaves the original', async () => {
      await s.put('cond/k', Readable.from([Buffer.from('first')]), { ifNotExists: true });
      await expectCode(
        s.put('cond/k', Readable.from([Buffer.from('second')]), { ifNotExists: true }),
        ErrorCodes.STORAGE_CONFLICT,
      );
      expect((await readAll(await s.get('cond/k'))).toString()).toBe('first');
      await s.put('cond/k', Readable.from([Buffer.from('third')]));
      expect((await readAll(await s.get('cond/k'))).toString()).toBe('third');
      expect(await listKeys(s, 'cond/')).toEqual(['cond/k']);
      await expectNoLeftovers();
    });

    it('a source that fails midway leaves no object and nothing behind', async () => {
      const boom = new Error('source exploded');
      let caught: unknown;
      try {
        await s.put('fail/midway.bin', failingStream(bigSize - 3 * MiB, boom));
      } catch (e) {
        caught = e;
      }
      // The producer's error comes back as it was: storage is not what failed.
      expect(caught).toBe(boom);
      expect(await s.head('fail/midway.bin')).toBeUndefined();
      expect(await listKeys(s, 'fail/')).toEqual([]);
      await expectNoLeftovers();
    });

    it('an aborted put (AbortSignal) leaves no object and nothing behind', async () => {
      const ctl = new AbortController();
      const src = slowStream((total) => {
        if (total >= bigSize - 4 * MiB) ctl.abort();
      });
      await expectCode(s.put('abort/late.bin', src, { signal: ctl.signal }), ErrorCodes.INTERRUPTED);
      expect(src.destroyed).toBe(true);
      expect(await s.head('abort/late.bin')).toBeUndefined();
      expect(await listKeys(s, 'abort/')).toEqual([]);
      await expectNoLeftovers();
    });

    it('a put with an already aborted signal does nothing', async () => {
      const ctl = new AbortController();
      ctl.abort();
      await expectCode(
        s.put('abort/early.bin', Readable.from([Buffer.from('x')]), { signal: ctl.signal }),
        ErrorCodes.INTERRUPTED,
      );
      expect(await s.head('abort/early.bin')).toBeUndefined();
    });

    it('the probe succeeds and cleans up after itself', async () => {
      const res = await probeStorage(s);
      expect(res.steps.map((st) => st.name)).toEqual(['list', 'write', 'read', 'delete']);
      expect(await listKeys(s, PROBE_PREFIX)).toEqual([]);
      await expectNoLeftovers();
    });
  });
}
