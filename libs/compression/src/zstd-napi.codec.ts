import type { Duplex } from 'node:stream';
import {
  ZSTD_DEFAULT_LEVEL,
  throughStage,
  type BufferCompressOptions,
  type Codec,
  type CompressOptions,
  type CompressSession,
  type DecompressOptions,
} from './codec';
import { ZstdFrameScanner } from './zstd-frame.scanner';
import { checkCompressOptions, generatorDuplex, zstdError } from './zstd.stream';

type Binding = typeof import('zstd-napi/binding');

/**
 * Default worker threads. With nbWorkers >= 1 libzstd compresses on its own threads, so
 * the event loop stays free for encryption and upload. Measured on the 2-core reference
 * machine, 200 MiB of dump-like text at level 3 (ratio 3.2), medians of 3 in one run:
 * 0 threads 201 MB/s, 1 thread 237 MB/s, 2 threads 334 MB/s (zstd CLI -T1 203, -T2 302).
 */
export const ZSTD_DEFAULT_THREADS = 2;

let binding: Binding | undefined;
/** The contexts of compressBuffer on this thread, by worker-thread count (see there). */
const oneShot = new Map<number, InstanceType<Binding['CCtx']>>();
let oneShotD: InstanceType<Binding['DCtx']> | undefined;
/** A frame that says it holds more goes through the streaming decoder. */
const ONE_SHOT_DECOMPRESS_MAX = 1024 * 1024 * 1024;
let loadError: Error | undefined;

/**
 * Load the native binding once. A missing or unbuilt addon (npm skipped its install
 * script, wrong platform) is reported, not thrown, so the registry can fall back to wasm.
 */
export function loadZstdNapi(): { binding?: Binding; error?: Error } {
  if (!binding && !loadError) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily so a broken addon can be caught
      binding = require('zstd-napi/binding') as Binding;
    } catch (e) {
      loadError = e instanceof Error ? e : new Error(String(e));
    }
  }
  return { binding, error: loadError };
}

export function zstdNapiVersion(): string | undefined {
  return loadZstdNapi().binding?.versionString();
}

const IMPLEMENTATION = 'zstd-napi';
/**
 * With worker threads, each job's input and output are buffered: libzstd's default job
 * size (a multiple of the window) holds far more memory than the threads need to stay busy.
 */
const ZSTD_MT_JOB_SIZE = 4 * 1024 * 1024;
/** libzstd's smallest job is 512 KiB; below a MiB per job the threads cost more than they give. */
const ONE_SHOT_MIN_JOB = 1024 * 1024;

// libzstd always makes progress while it has output room; if it ever did not, fail
// instead of spinning forever.
function noProgress(): Error {
  return zstdError(new Error('libzstd made no progress'), IMPLEMENTATION, 'decompress');
}

/** zstd through libzstd (zstd-napi): streaming, multi-threaded, writes content checksums like the CLI. */
export class ZstdNapiCodec implements Codec {
  readonly name = 'zstd';
  readonly extension = 'zst';
  readonly implementation = IMPLEMENTATION;
  private readonly z: Binding;

  constructor() {
    const { binding: b, error } = loadZstdNapi();
    if (!b) throw zstdError(error, IMPLEMENTATION, 'compress');
    this.z = b;
  }

  compressSession(opts: CompressOptions = {}): CompressSession {
    const level = opts.level ?? ZSTD_DEFAULT_LEVEL;
    const threads = opts.threads ?? ZSTD_DEFAULT_THREADS;
    checkCompressOptions(level, threads);
    const z = this.z;
    const cctx = new z.CCtx();
    try {
      cctx.setParameter(z.CParameter.compressionLevel, level);
      cctx.setParameter(z.CParameter.checksumFlag, 1);
      if (threads > 0) {
        cctx.setParameter(z.CParameter.nbWorkers, threads);
        cctx.setParameter(z.CParameter.jobSize, ZSTD_MT_JOB_SIZE);
      }
    } catch (e) {
      throw zstdError(e, IMPLEMENTATION, 'compress');
    }
    const outSize = z.cStreamOutSize();
    // Reused until something is written into it: with worker threads most calls only hand
    // input over and produce nothing, and a fresh buffer per call costs GC time.
    let out = Buffer.allocUnsafe(outSize);

    // ZSTD_compressStream2 over all of `src`; returns whatever output is ready.
    function step(src: Buffer, end: boolean): Buffer[] {
      const ready: Buffer[] = [];
      const directive = end ? z.EndDirective.end : z.EndDirective.continue;
      for (;;) {
        let ret: number, produced: number, consumed: number;
        try {
          [ret, produced, consumed] = cctx.compressStream2(out, src, directive);
        } catch (e) {
          throw zstdError(e, IMPLEMENTATION, 'compress');
        }
        if (produced > 0) {
          ready.push(out.subarray(0, produced));
          out = Buffer.allocUnsafe(outSize);
        }
        src = src.subarray(consumed);
        // continue: done once the input is taken; end: done once everything is flushed.
        if (src.length === 0 && (!end || ret === 0)) return ready;
      }
    }
    return { push: (chunk) => step(chunk, false), end: () => step(Buffer.alloc(0), true) };
  }

  compressor(opts: CompressOptions = {}): Duplex {
    const session = this.compressSession(opts);
    return generatorDuplex(async function* (input) {
      for await (const chunk of input) yield* session.push(chunk as Buffer);
      yield* session.end();
    });
  }

  /**
   * One-shot, synchronous. With `threads` > 0 libzstd splits the input into that many jobs
   * and compresses them on its own threads while this one waits (one frame all the same,
   * a little more CPU): for latency when the cores are otherwise idle.
   */
  compressBuffer(data: Uint8Array, opts: BufferCompressOptions = {}): Promise<Buffer> {
    const level = opts.level ?? ZSTD_DEFAULT_LEVEL;
    const threads = opts.threads ?? 0;
    checkCompressOptions(level, threads);
    const z = this.z;
    try {
      // compress2 is synchronous: one context per thread and worker count serves every call
      // and keeps its tables (and libzstd's worker threads and job buffers) between calls;
      // changing the worker count of one context would free and rebuild them
      let cctx = oneShot.get(threads);
      if (!cctx) {
        cctx = new z.CCtx();
        cctx.setParameter(z.CParameter.nbWorkers, threads);
        oneShot.set(threads, cctx);
      }
      cctx.setParameter(z.CParameter.compressionLevel, level);
      cctx.setParameter(z.CParameter.checksumFlag, 1);
      if (threads > 0) {
        cctx.setParameter(z.CParameter.jobSize, Math.max(ONE_SHOT_MIN_JOB, Math.ceil(data.length / threads)));
      }
      const bound = z.compressBound(data.length);
      const dst = opts.into && opts.into.length >= bound ? opts.into : Buffer.allocUnsafe(bound);
      return Promise.resolve(dst.subarray(0, cctx.compress2(dst, data)));
    } catch (e) {
      // a context left mid-frame by an error is not reused
      oneShot.delete(threads);
      return Promise.reject(zstdError(e, IMPLEMENTATION, 'compress'));
    }
  }

  /**
   * One frame that states its size (what compressBuffer writes) is decompressed in one call
   * into a buffer of exactly that size; anything else (several frames, no size, a truncated
   * frame) goes through the streaming decoder, which tells truncated from corrupt input.
   */
  decompressBuffer(data: Uint8Array): Promise<Buffer> {
    const z = this.z;
    let size: number | null = null;
    try {
      if (z.findFrameCompressedSize(data) === data.length) size = z.getFrameContentSize(data);
    } catch {
      size = null; // not one whole frame: the streaming decoder says what is wrong
    }
    if (size === null || size > ONE_SHOT_DECOMPRESS_MAX) return throughStage(this.decompressor(), data);
    try {
      oneShotD ??= new z.DCtx();
      const dst = Buffer.allocUnsafe(size);
      const n = oneShotD.decompress(dst, data);
      if (n !== size) throw new Error(`the frame header says ${size} bytes, the frame holds ${n}`);
      return Promise.resolve(dst);
    } catch (e) {
      oneShotD = undefined;
      return Promise.reject(zstdError(e, IMPLEMENTATION, 'decompress'));
    }
  }

  decompressor(opts: DecompressOptions = {}): Duplex {
    const z = this.z;
    const dctx = new z.DCtx();
    const pool = opts.pool && opts.pool.size >= z.dStreamOutSize() ? opts.pool : undefined;
    const outSize = pool?.size ?? z.dStreamOutSize();
    const fresh = () => pool?.take() ?? Buffer.allocUnsafe(outSize);
    const scanner = new ZstdFrameScanner();

    return generatorDuplex(async function* (input) {
      let out = fresh();
      for await (const chunk of input) {
        scanner.update(chunk);
        let src = chunk;
        for (;;) {
          let ret: number, produced: number, consumed: number;
          try {
            [ret, produced, consumed] = dctx.decompressStream(out, src);
          } catch (e) {
            throw zstdError(e, IMPLEMENTATION, 'decompress');
          }
          if (produced === 0 && consumed === 0 && src.length > 0) throw noProgress();
          src = src.subarray(consumed);
          if (produced > 0) {
            const ready = out.subarray(0, produced);
            out = fresh();
            yield pool ? pool.lend(ready) : ready;
          }
          // A full output buffer may mean more is pending inside libzstd: call again.
          if (src.length === 0 && (produced < outSize || ret === 0)) break;
        }
      }
      scanner.finish();
    });
  }
}
