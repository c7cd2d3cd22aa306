import { PassThrough, Readable, Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { BufferPool, isDbcrateError, ErrorCodes, createLogger, setLogger } from '@dbcrate/core';
import type { Codec } from './codec';
import { ZstdNapiCodec } from './zstd-napi.codec';
import { ZstdWasmCodec } from './zstd-wasm.codec';
import { sampleData, sha256, through } from './compression.fixture';

const native = new ZstdNapiCodec();
const wasm = new ZstdWasmCodec();
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isDbcrateError(e)) return e.code;
    throw e;
  }
  throw new Error('expected a failure');
}

/** A hand-made zstd frame of `mib` MiB of zeros as RLE blocks: 4 bytes per 128 KiB. */
function zeroBomb(mib: number): Buffer {
  const header = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58]); // no checksum, 2 MiB window
  const blocks = Buffer.alloc(mib * 8 * 4);
  for (let i = 0; i < mib * 8; i++) {
    const last = i === mib * 8 - 1 ? 1 : 0;
    blocks.writeUIntLE(((128 * 1024) << 3) | (1 << 1) | last, i * 4, 3); // RLE block of 128 KiB
    blocks[i * 4 + 3] = 0;
  }
  return Buffer.concat([header, blocks]);
}

const big = sampleData(40 * 1024 * 1024, 7);
const medium = sampleData(3 * 1024 * 1024, 11);
const compressedBy = new Map<string, Buffer>();

describe.each([
  ['native (zstd-napi)', native],
  ['wasm (zstd-codec)', wasm],
])('%s', (_label, codec: Codec) => {
  jest.setTimeout(120_000);

  it('round-trips 0 bytes as one valid frame', async () => {
    const z = await through(Buffer.alloc(0), codec.compressor());
    expect(z.subarray(0, 4)).toEqual(ZSTD_MAGIC);
    expect(await through(z, codec.decompressor())).toEqual(Buffer.alloc(0));
  });

  it('round-trips a small input', async () => {
    const input = Buffer.from('hello, dbcrate\n'.repeat(3));
    const z = await through(input, codec.compressor());
    expect((await through(z, codec.decompressor())).toString()).toBe(input.toString());
  });

  it('round-trips ~40 MB streamed, and compresses it', async () => {
    const z = await through(big, codec.compressor({ level: 3 }));
    compressedBy.set(codec.implementation, z);
    expect(z.length).toBeLessThan(big.length / 2);
    const back = await through(z, codec.decompressor());
    expect(back.length).toBe(big.length);
    expect(sha256(back)).toBe(sha256(big));
  });

  it('reads several concatenated frames and skippable frames', async () => {
    const a = await through(Buffer.from('first '), codec.compressor());
    const b = await through(medium, codec.compressor({ level: 1 }));
    const skippable = Buffer.from([0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
    const back = await through(Buffer.concat([a, skippable, b, a]), codec.decompressor());
    expect(sha256(back)).toBe(sha256(Buffer.concat([Buffer.from('first '), medium, Buffer.from('first ')])));
  });

  it('fails with E_INTEGRITY (exit 6) on input that is not zstd', async () => {
    expect(await codeOf(through(Buffer.from('plain text, not compressed'), codec.decompressor()))).toBe(
      ErrorCodes.INTEGRITY,
    );
  });

  it('fails with E_INTEGRITY (exit 6) on a corrupted frame (checksummed input)', async () => {
    const z = Buffer.from(await through(medium, native.compressor()));
    for (let i = 1000; i < z.length - 100; i += 997) z[i] ^= 0x5a;
    expect(await codeOf(through(z, codec.decompressor()))).toBe(ErrorCodes.INTEGRITY);
  });

  it('fails with E_INTEGRITY on truncated input, at any cut', async () => {
    const z = await through(medium, native.compressor());
    for (const cut of [3, 7, 100, Math.floor(z.length / 2), z.length - 1]) {
      expect(await codeOf(through(z.subarray(0, cut), codec.decompressor()))).toBe(ErrorCodes.INTEGRITY);
    }
  });

  it('fails with E_INTEGRITY on empty input', async () => {
    expect(await codeOf(through(Buffer.alloc(0), codec.decompressor()))).toBe(ErrorCodes.INTEGRITY);
  });

  it('rejects a bad level', () => {
    expect(() => codec.compressor({ level: 0 })).toThrow(/level/);
  });

  it('fails fast, without hanging, when the source fails or the stage is destroyed', async () => {
    async function* failing(): AsyncGenerator<Buffer> {
      yield medium.subarray(0, 100_000);
      throw new Error('pg_dump died');
    }
    await expect(
      pipeline(Readable.from(failing()), codec.compressor(), new PassThrough().resume()),
    ).rejects.toThrow('pg_dump died');
    const d = codec.decompressor();
    d.write(await through(medium, codec.compressor()));
    d.destroy(new Error('cancelled'));
    await expect(finished(d)).rejects.toThrow('cancelled');
  });

  it('keeps memory bounded on a decompression bomb (8 GiB of zeros in 256 KiB)', async () => {
    const rssBefore = process.memoryUsage().rss;
    const d = codec.decompressor();
    d.end(zeroBomb(8 * 1024));
    let read = 0;
    for await (const chunk of d) {
      read += (chunk as Buffer).length;
      if (read >= 64 * 1024 * 1024) break; // breaking out destroys the stream
    }
    expect(read).toBeGreaterThanOrEqual(64 * 1024 * 1024);
    // An implementation that decodes whole input chunks at once would hold GiBs here.
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 * 1024 * 1024);
  });
});

describe.each([
  ['native (zstd-napi)', native],
  ['wasm (zstd-codec)', wasm],
])('%s, one-shot buffers', (_label, codec: Codec) => {
  jest.setTimeout(120_000);

  it.each([0, 1, 4096, 3 * 1024 * 1024])('round-trips %i bytes', async (n) => {
    const input = medium.subarray(0, n);
    const z = await codec.compressBuffer(input);
    expect(sha256(await codec.decompressBuffer(z))).toBe(sha256(input));
    // the streaming decoder reads the same frame
    expect(sha256(await through(z, codec.decompressor()))).toBe(sha256(input));
  });

  it('with threads, one frame that both decoders and the other contexts read, interleaved with calls without', async () => {
    const input = big.subarray(0, 16 * 1024 * 1024);
    const into = Buffer.alloc(17 * 1024 * 1024);
    for (const threads of [2, 0, 2, 1]) {
      const z = Buffer.from(await codec.compressBuffer(input, { threads, into }));
      expect(z.subarray(0, 4).equals(ZSTD_MAGIC)).toBe(true);
      expect(sha256(await codec.decompressBuffer(z))).toBe(sha256(input));
      expect(sha256(await through(z, codec.decompressor()))).toBe(sha256(input));
      // a small input right after, on the context of the other thread count
      const small = await codec.compressBuffer(medium.subarray(0, 5000), { threads: threads ? 0 : 2 });
      expect(sha256(await codec.decompressBuffer(small))).toBe(sha256(medium.subarray(0, 5000)));
    }
  });

  it('reads frames the streaming compressor wrote (no content size), several frames, skippable frames', async () => {
    const a = await through(Buffer.from('first '), codec.compressor());
    const b = await codec.compressBuffer(medium);
    const skippable = Buffer.from([0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
    expect(sha256(await codec.decompressBuffer(a))).toBe(sha256(Buffer.from('first ')));
    const back = await codec.decompressBuffer(Buffer.concat([a, skippable, b]));
    expect(sha256(back)).toBe(sha256(Buffer.concat([Buffer.from('first '), medium])));
  });

  it('E_INTEGRITY on a corrupted frame, a truncated one at any cut, empty input and what is not zstd', async () => {
    const z = await native.compressBuffer(medium);
    const bad = Buffer.from(z);
    for (let i = 1000; i < bad.length - 100; i += 997) bad[i] ^= 0x5a;
    expect(await codeOf(codec.decompressBuffer(bad))).toBe(ErrorCodes.INTEGRITY);
    const lastByte = Buffer.from(z);
    lastByte[lastByte.length - 1] ^= 1; // inside the content checksum
    expect(await codeOf(codec.decompressBuffer(lastByte))).toBe(ErrorCodes.INTEGRITY);
    for (const cut of [3, 7, 100, Math.floor(z.length / 2), z.length - 1]) {
      expect(await codeOf(codec.decompressBuffer(z.subarray(0, cut)))).toBe(ErrorCodes.INTEGRITY);
    }
    expect(await codeOf(codec.decompressBuffer(Buffer.alloc(0)))).toBe(ErrorCodes.INTEGRITY);
    expect(await codeOf(codec.decompressBuffer(Buffer.from('plain text, not compressed')))).toBe(
      ErrorCodes.INTEGRITY,
    );
  });
});

describe("native one-shot: into a caller's buffer", () => {
  it('compresses into `into` when it holds the worst case, else into a new buffer', async () => {
    const into = Buffer.alloc(medium.length + 64 * 1024);
    const z1 = await native.compressBuffer(medium, { into });
    expect(z1.buffer).toBe(into.buffer);
    expect(sha256(await native.decompressBuffer(z1))).toBe(sha256(medium));
    const small = Buffer.alloc(16);
    const z2 = await native.compressBuffer(medium, { into: small });
    expect(z2.buffer).not.toBe(small.buffer);
    expect(sha256(await native.decompressBuffer(z2))).toBe(sha256(medium));
  });
});

describe('native specifics', () => {
  jest.setTimeout(120_000);

  it('decompresses into pooled buffers: a slow last stage that gives them back sees every byte intact', async () => {
    const z = await through(big, native.compressor());
    const pool = new BufferPool(256 * 1024, 4);
    const hash = createHash('sha256');
    let recycled = 0;
    const seen = new Set<ArrayBufferLike>();
    // as pipe writes still queued: the last stage holds several chunks, and gives each back
    // only once it is "written" (hashed)
    const held: Buffer[] = [];
    const written = (chunk: Buffer) => {
      hash.update(chunk);
      pool.giveBack(chunk);
    };
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        if (seen.has(chunk.buffer)) recycled++;
        seen.add(chunk.buffer);
        held.push(chunk);
        if (held.length > 3) written(held.shift()!);
        cb();
      },
      final(cb) {
        held.splice(0).forEach(written);
        cb();
      },
    });
    await pipeline(Readable.from([z]), native.decompressor({ pool }), sink);
    expect(hash.digest('hex')).toBe(sha256(big));
    expect(recycled).toBeGreaterThan(10);
  });

  it.each([0, 1, 2])('compresses with %i worker threads', async (threads) => {
    const z = await through(medium, native.compressor({ threads }));
    expect(sha256(await through(z, native.decompressor()))).toBe(sha256(medium));
  });

  it('writes a content checksum like the zstd CLI (frame header flag)', async () => {
    const z = await through(Buffer.from('x'), native.compressor());
    expect(z[4] & 0x04).toBe(0x04);
  });
});

describe('wasm specifics', () => {
  jest.setTimeout(120_000);

  it('compresses above level 9 at level 9 (its fixed 16 MiB memory), with one warning', async () => {
    const lines: string[] = [];
    setLogger(
      createLogger({
        level: 'warn',
        destination: new Writable({
          write(chunk: Buffer, _e, cb) {
            lines.push(chunk.toString());
            cb();
          },
        }),
      }),
    );
    for (const level of [19, 12]) {
      const z = await through(medium, wasm.compressor({ level }));
      expect(sha256(await through(z, native.decompressor()))).toBe(sha256(medium));
    }
    expect(lines.filter((l) => /compressing at level 9/.test(l))).toHaveLength(1);
  });
});

describe('cross-implementation', () => {
  jest.setTimeout(120_000);

  it('native output is read by wasm', async () => {
    const z = compressedBy.get('zstd-napi') ?? (await through(big, native.compressor()));
    expect(sha256(await through(z, wasm.decompressor()))).toBe(sha256(big));
  });

  it('wasm output is read by native', async () => {
    const z = compressedBy.get('zstd-codec') ?? (await through(big, wasm.compressor()));
    expect(sha256(await through(z, native.decompressor()))).toBe(sha256(big));
  });
});
