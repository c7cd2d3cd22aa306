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

/**
 * Buffers of one size handed along a stream chain and given back by its last stage once
 * written, so that gigabytes pass through a few buffers instead of one new buffer per chunk
 * (which keeps the garbage collector busy). Only a view exactly as it was lent (offset 0,
 * the lent length) is taken back: a chunk that a stage split or joined on the way is never
 * reused while a piece of it may still be pending, it is only not recycled.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly lent = new WeakMap<ArrayBufferLike, number>();

  constructor(
    readonly size: number,
    private readonly keep = 8,
  ) {}

  /** A buffer of `size` bytes to write into (recycled or new). */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** `view` (the start of a taken buffer) goes down the chain. */
  lend(view: Buffer): Buffer {
    if (view.byteOffset === 0 && view.buffer.byteLength === this.size)
      this.lent.set(view.buffer, view.byteLength);
    return view;
  }

  /** The last stage is done with `chunk`: recycle its buffer if it is one lent, unchanged. */
  giveBack(chunk: Buffer): void {
    if (chunk.byteOffset !== 0 || this.lent.get(chunk.buffer) !== chunk.byteLength) return;
    this.lent.delete(chunk.buffer);
    if (this.free.length < this.keep) this.free.push(Buffer.from(chunk.buffer, 0, this.size));
  }
}
