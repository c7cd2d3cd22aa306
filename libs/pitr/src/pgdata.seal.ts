import type { Codec, CompressSession } from '@dbcrate/compression';
import type { Cipher, EncryptSession, RecipientKey } from '@dbcrate/crypto';
import { READ_CHUNK } from './pgdata.files';

/**
 * A base-backup part compressed and encrypted by calls on this thread, with no stream
 * stages between the reader and libzstd: each chunk is taken by the compressor before the
 * next one is read, so a part reads all its files into one buffer instead of a new one per
 * read (which kept the garbage collector busy with gigabytes of short-lived buffers).
 */
export interface PartSealer {
  /** The buffer the part's reads go into. */
  readonly readBuffer: Buffer;
  /** Plaintext bytes taken so far. */
  readonly plainBytes: number;
  /** The stored object's bytes, from the part's tar stream. */
  seal(tar: AsyncIterable<Buffer>): AsyncGenerator<Buffer>;
}

/** Undefined when the codec or the cipher cannot work by calls (then the stream stages do). */
export async function partSealer(
  codec: Codec,
  cipher: Cipher,
  opts: { level: number; threads: number; recipients: RecipientKey[] },
): Promise<PartSealer | undefined> {
  if (!codec.compressSession || !cipher.encryptSession) return undefined;
  const z: CompressSession = codec.compressSession({ level: opts.level, threads: opts.threads });
  const e: EncryptSession = await cipher.encryptSession(opts.recipients);
  let plainBytes = 0;
  return {
    readBuffer: Buffer.allocUnsafeSlow(READ_CHUNK),
    get plainBytes() {
      return plainBytes;
    },
    async *seal(tar) {
      for await (const chunk of tar) {
        plainBytes += chunk.length;
        // the chunk may be readBuffer: push takes all of it before the next read
        for (const c of z.push(chunk)) yield* e.push(c);
      }
      for (const c of z.end()) yield* e.push(c);
      yield* e.end();
    },
  };
}
