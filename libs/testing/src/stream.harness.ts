import { createHash } from 'node:crypto';
import { Readable, Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Readable of `input` in `chunkSize` pieces (like a file or a pg_dump pipe). */
export function chunked(input: Buffer, chunkSize = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < input.length; i += chunkSize) yield input.subarray(i, i + chunkSize);
    })(),
    { objectMode: false },
  );
}

/** Pipe `input` (a buffer, fed in 64 KiB chunks, or a stream) through the stages and collect the output. */
export async function through(input: Buffer | Readable, ...stages: Duplex[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      cb();
    },
  });
  await pipeline([Buffer.isBuffer(input) ? chunked(input) : input, ...stages, sink]);
  return Buffer.concat(parts);
}
