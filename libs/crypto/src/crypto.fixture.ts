/**
 * Test helpers for the crypto specs (not exported from the lib).
 */
import { createHash } from 'node:crypto';
import { Readable, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isDbcrateError } from '@dbcrate/core';

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Deterministic pseudo-random bytes (incompressible, like zstd output). */
export function noise(bytes: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(bytes);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s & 0xff;
  }
  return out;
}

export function chunked(input: Buffer, chunkSize = 128 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < input.length; i += chunkSize) yield input.subarray(i, i + chunkSize);
    })(),
    { objectMode: false },
  );
}

/** Pipe `input` through the stages and collect the output. */
export async function through(input: Buffer, ...stages: Duplex[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  await pipeline([
    chunked(input),
    ...stages,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        parts.push(chunk);
        cb();
      },
    }),
  ]);
  return Buffer.concat(parts);
}

/** The DbcrateError a promise rejects with (fails the test on anything else). */
export async function failure(
  p: Promise<unknown>,
): Promise<{ code: string; message: string; hint?: string }> {
  try {
    await p;
  } catch (e) {
    if (isDbcrateError(e)) return { code: e.code, message: e.message, hint: e.hint };
    throw e;
  }
  throw new Error('expected a DbcrateError, but it succeeded');
}
