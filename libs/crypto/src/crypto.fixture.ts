/**
 * Test helpers for the crypto specs (not exported from the lib).
 */
import type { Duplex } from 'node:stream';
import { isDbcrateError } from '@dbcrate/core';
import { chunked, through as pipeThrough } from '@dbcrate/testing';

export { sha256 } from '@dbcrate/testing';

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

/** Pipe `input`, fed in 128 KiB chunks (zstd's output size), through the stages and collect the output. */
export function through(input: Buffer, ...stages: Duplex[]): Promise<Buffer> {
  return pipeThrough(chunked(input, 128 * 1024), ...stages);
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
