import { Duplex } from 'node:stream';
import { DbcrateError, ErrorCodes, isDbcrateError } from '@dbcrate/core';

/**
 * A codec stage as a Duplex driven by an async generator: the generator pulls input
 * chunks and yields output chunks, and only runs while the reader wants more, so one
 * input chunk and one output chunk are in flight at most (bounded memory, even for a
 * decompression bomb). Errors thrown inside become the stream's error.
 */
export function generatorDuplex(transform: (input: AsyncIterable<Buffer>) => AsyncGenerator<Buffer>): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Buffer | string>) {
    yield* transform(asBuffers(source));
  });
}

async function* asBuffers(source: AsyncIterable<Buffer | string | Uint8Array>): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    if (buf.length > 0) yield buf;
  }
}

/** Turn what a zstd library threw into a DbcrateError (E_CODEC) with a readable message. */
export function zstdError(e: unknown, implementation: string, direction: 'compress' | 'decompress'): DbcrateError {
  if (isDbcrateError(e)) return e;
  const detail = e instanceof Error ? e.message : String(e);
  if (direction === 'decompress') {
    return new DbcrateError(ErrorCodes.CODEC, `zstd data is corrupt: ${detail} (${implementation})`, {
      hint: 'The object is damaged, or it is not zstd-compressed data.',
      cause: e,
    });
  }
  return new DbcrateError(ErrorCodes.CODEC, `zstd compression failed: ${detail} (${implementation})`, { cause: e });
}

/** Validate a zstd level/threads pair once, with messages a user can act on. */
export function checkCompressOptions(level: number, threads: number): void {
  if (!Number.isInteger(level) || level < 1 || level > 22) {
    throw new DbcrateError(ErrorCodes.USAGE, `zstd level must be an integer from 1 to 22, got ${level}`, {
      hint: 'Levels 1-19 are normal; 3 is the default.',
    });
  }
  if (!Number.isInteger(threads) || threads < 0 || threads > 64) {
    throw new DbcrateError(ErrorCodes.USAGE, `zstd threads must be an integer from 0 to 64, got ${threads}`);
  }
}
