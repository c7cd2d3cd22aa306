import type { Duplex } from 'node:stream';
import type { StagePlugin } from '@dbcrate/core';

export interface CompressOptions {
  /** zstd level, 1..19 (default 3). */
  level?: number;
  /** Worker threads for compression (zstd nbWorkers); 0 = single-threaded. */
  threads?: number;
}

/** A compression codec. Output of `compressor()` must be standard frames (`zstd -d` reads them). */
export interface Codec extends StagePlugin {
  /** Which implementation serves this codec, e.g. "zstd-napi" or "zstd-codec". */
  readonly implementation: string;
  compressor(opts?: CompressOptions): Duplex;
  decompressor(): Duplex;
}

export type ZstdImplementation = 'auto' | 'native' | 'wasm';
