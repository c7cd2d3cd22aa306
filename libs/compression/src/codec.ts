import type { Duplex } from 'node:stream';
import type { BufferPool, StagePlugin } from '@dbcrate/core';

export interface CompressOptions {
  /** zstd level, 1..19 (default 3; up to 22 accepted). */
  level?: number;
  /**
   * Worker threads for compression (zstd nbWorkers); 0 = compress on the calling thread.
   * Ignored by implementations without threads (WebAssembly).
   */
  threads?: number;
}

export interface BufferCompressOptions extends CompressOptions {
  /**
   * Compress into this buffer when it can hold the worst case (`compressBound` of the
   * input); the result is then a view of it, valid until the caller reuses the buffer.
   * For callers that compress many inputs of one size (WAL segments). Implementations may
   * ignore it and allocate.
   */
  into?: Buffer;
}

export interface DecompressOptions {
  /**
   * Write the output into buffers of this pool (its size: dStreamOutSize or more), which the
   * chain's last stage gives back once written. Implementations may ignore it.
   */
  pool?: BufferPool;
}

/**
 * Compression driven by calls instead of a stream: `push` takes all of `chunk` (libzstd
 * copies what it keeps) and returns the output ready so far, so the caller may reuse the
 * chunk's memory as soon as it returns; `end` returns the rest. The returned buffers are
 * the caller's.
 */
export interface CompressSession {
  push(chunk: Buffer): Buffer[];
  end(): Buffer[];
}

/**
 * A compression codec. Both directions are streaming Duplexes with bounded buffers.
 * `compressor()` output is standard frames (`zstd -d` reads them); `decompressor()` reads
 * any sequence of standard and skippable frames (what `zstd` or `cat a.zst b.zst` writes)
 * and fails with E_INTEGRITY on corrupt or truncated input.
 */
export interface Codec extends StagePlugin {
  /** Which implementation serves this codec, e.g. "zstd-napi" or "zstd-codec". */
  readonly implementation: string;
  compressor(opts?: CompressOptions): Duplex;
  /** The same frames as `compressor()`, by calls (implementations that can do it synchronously). */
  compressSession?(opts?: CompressOptions): CompressSession;
  decompressor(opts?: DecompressOptions): Duplex;
  /** One-shot, for small objects such as WAL files (16 MiB): same frames as the stream. */
  compressBuffer(data: Uint8Array, opts?: BufferCompressOptions): Promise<Buffer>;
  decompressBuffer(data: Uint8Array): Promise<Buffer>;
}

/** One-shot through a streaming stage (for implementations without a one-shot API). */
export async function throughStage(stage: Duplex, data: Uint8Array): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    stage.on('data', (c: Buffer) => chunks.push(c));
    stage.once('end', resolve);
    stage.once('error', reject);
  });
  stage.end(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  await done;
  return Buffer.concat(chunks);
}

export type ZstdImplementation = 'auto' | 'native' | 'wasm';

export const ZSTD_DEFAULT_LEVEL = 3;
