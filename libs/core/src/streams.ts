import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * Pass-through that counts bytes and, unless told not to, hashes them (sha256) as they go
 * by. Hashing costs ~0.6 s of main-thread CPU per GB, so meters that only need a size skip it.
 */
export class MeterStream extends Transform {
  bytes = 0;
  private readonly hash?: Hash;
  private digest?: string;

  constructor(
    private readonly onBytes?: (total: number) => void,
    opts: { hash?: boolean } = {},
  ) {
    super();
    if (opts.hash !== false) this.hash = createHash('sha256');
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash?.update(chunk);
    this.onBytes?.(this.bytes);
    cb(null, chunk);
  }

  /** Hex sha256 of everything that passed; call once the stream has finished. */
  sha256(): string {
    if (!this.hash) throw new Error('MeterStream was created without hashing');
    this.digest ??= this.hash.digest('hex');
    return this.digest;
  }
}
