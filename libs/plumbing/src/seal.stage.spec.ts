import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { getCodec } from '@dbcrate/compression';
import { DbcrateError } from '@dbcrate/core';
import { generateKeyPair, getCipher, loadDecryptionKey, loadRecipientKey } from '@dbcrate/crypto';
import { WorkerStage, type WorkerStageOptions } from './worker.stage';
import { sealStage, workerEntry } from './seal.stage';
import type { FixtureSpec } from './worker-stage.fixture';

const fixture = { ...workerEntry('seal'), file: join(__dirname, 'worker-stage.fixture.ts') };
const stage = (spec: FixtureSpec, opts: Partial<WorkerStageOptions> = {}) =>
  new WorkerStage({ worker: fixture, workerData: spec, what: 'test', ...opts });

function sink(into: Buffer[] = []): Writable {
  return new Writable({
    write(c: Buffer, _e, cb) {
      into.push(c);
      cb();
    },
  });
}

async function run(src: Readable, s: WorkerStage, signal?: AbortSignal): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(src, s, sink(out), { signal });
  return Buffer.concat(out);
}

async function failure(p: Promise<unknown>): Promise<DbcrateError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(DbcrateError);
  return e as DbcrateError;
}

/** An endless source; `taken` is how many bytes anything pulled from it. */
function endless(chunk = 64 * 1024): Readable & { taken: number } {
  const r = new Readable({
    read() {
      r.taken += chunk;
      this.push(Buffer.alloc(chunk, 0x61));
    },
  }) as Readable & { taken: number };
  r.taken = 0;
  return r;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('WorkerStage', () => {
  it('keeps chunks in order across odd sizes and many round trips', async () => {
    const parts: Buffer[] = [];
    for (let i = 0; i < 300; i++) parts.push(Buffer.from(`${i}:${'x'.repeat((i * 7919) % 20000)};`));
    const s = stage({ mode: 'upper' }, { chunkSize: 16 * 1024, maxInFlight: 48 * 1024 });
    const out = await run(Readable.from(parts), s);
    expect(out.toString()).toBe(Buffer.concat(parts).toString().toUpperCase());
    expect(await s.exited).toBe(0);
  });

  it('empty input gives empty output and the worker leaves', async () => {
    const s = stage({ mode: 'upper' });
    expect((await run(Readable.from([]), s)).length).toBe(0);
    expect(await s.exited).toBe(0);
  });

  it('stops taking input while the worker has maxInFlight bytes', async () => {
    const src = endless();
    const s = stage({ mode: 'stall' }, { chunkSize: 64 * 1024, maxInFlight: 256 * 1024 });
    const done = run(src, s).catch((e: unknown) => e);
    await sleep(500);
    // in flight + the chunk being gathered + the stream buffers in between
    expect(src.taken).toBeLessThanOrEqual(256 * 1024 + 64 * 1024 + 4 * 64 * 1024);
    s.destroy(new Error('stop'));
    await done;
    await s.exited;
  });

  it('stops taking input while nobody reads its output', async () => {
    const src = endless();
    const s = stage({ mode: 'upper' }, { chunkSize: 64 * 1024, maxInFlight: 256 * 1024 });
    src.pipe(s); // the output is never read
    await sleep(500);
    expect(src.taken).toBeLessThanOrEqual(4 * 1024 * 1024);
    const before = src.taken;
    await sleep(200);
    expect(src.taken).toBe(before);
    s.destroy();
    await s.exited;
  });

  it('a DbcrateError inside the worker arrives with its code, message and hint', async () => {
    const s = stage({ mode: 'fail-at', after: 200 * 1024 }, { chunkSize: 64 * 1024 });
    const e = await failure(run(Readable.from([Buffer.alloc(1024 * 1024, 0x61)]), s));
    expect(e.code).toBe('E_INTEGRITY');
    expect(e.message).toBe('data is damaged');
    expect(e.hint).toBe('Restore another snapshot.');
    await s.exited;
  });

  it('an error while the worker sets up arrives the same way', async () => {
    const s = stage({ mode: 'fail-build' });
    const e = await failure(run(Readable.from([Buffer.from('x')]), s));
    expect(e.code).toBe('E_CONFIG');
    expect(e.hint).toMatch(/Known ciphers/);
  });

  it('a worker that dies is an error, not a hang', async () => {
    const s = stage({ mode: 'crash' });
    const e = await failure(run(Readable.from([Buffer.from('x')]), s));
    expect(e.code).toBe('E_INTERNAL');
    expect(e.message).toMatch(/test worker thread exited \(code 3\)/);
  });

  it('abort tears the worker down', async () => {
    const ac = new AbortController();
    const s = stage({ mode: 'stall' });
    const done = run(endless(), s, ac.signal).catch((e: unknown) => e);
    await sleep(200);
    ac.abort();
    expect((await done) as Error).toMatchObject({ name: 'AbortError' });
    expect(typeof (await s.exited)).toBe('number');
    expect(s.destroyed).toBe(true);
  });

  it('a failing source (a killed pg_dump) tears the worker down', async () => {
    const s = stage({ mode: 'upper' });
    const src = new Readable({ read() {} });
    const done = run(src, s).catch((e: unknown) => e);
    src.push(Buffer.alloc(100000, 0x61));
    await sleep(100);
    src.destroy(new Error('pg_dump was killed'));
    expect(((await done) as Error).message).toBe('pg_dump was killed');
    await s.exited;
  });
});

describe('sealStage', () => {
  it('compresses and encrypts in a worker; the usual stages read it back', async () => {
    const pair = await generateKeyPair({ name: 'seal test' });
    const recipient = await loadRecipientKey(pair.publicArmored);
    const data = Buffer.from('some row data, '.repeat(200000));
    const s = sealStage({
      codec: { name: 'zstd', level: 3, threads: 2 },
      cipher: { name: 'openpgp', recipients: [recipient] },
    });
    const sealed = await run(Readable.from([data.subarray(0, 1000), data.subarray(1000)]), s);
    const key = await loadDecryptionKey(pair.privateArmored);
    const back = await run(Readable.from([sealed]), getCipher('openpgp').decryptor([key]) as never);
    expect((await getCodec('zstd').decompressBuffer(back)).equals(data)).toBe(true);
    expect(await s.exited).toBe(0);
  });

  it('empty input is still a valid (empty) sealed stream', async () => {
    const s = sealStage({ codec: { name: 'zstd' } });
    const out = await run(Readable.from([]), s);
    expect((await getCodec('zstd').decompressBuffer(out)).length).toBe(0);
  });
});
