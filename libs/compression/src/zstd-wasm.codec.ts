import type { Duplex } from 'node:stream';
import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import { ZSTD_DEFAULT_LEVEL, throughStage, type Codec, type CompressOptions } from './codec';
import { ZstdFrameScanner } from './zstd-frame.scanner';
import { checkCompressOptions, generatorDuplex, zstdError } from './zstd.stream';

/** The embind stream classes of zstd-codec (lib/zstd-codec-binding*.js). */
interface WasmStream {
  begin(level?: number): boolean;
  transform(chunk: Uint8Array, callback: (out: Uint8Array) => void): boolean;
  end(callback: (out: Uint8Array) => void): boolean;
  delete(): void;
}
interface WasmBinding {
  ZstdCompressStreamBinding: new () => WasmStream;
  ZstdDecompressStreamBinding: new () => WasmStream;
}

const IMPLEMENTATION = 'zstd-codec';

/**
 * Input is handed to the wasm module in slices: each call copies its input into wasm
 * memory and emits all output synchronously, so the slice size bounds both.
 */
const SLICE = 64 * 1024;
/**
 * The decoder emits up to slice x ratio per call, and zstd's ratio reaches ~32000:1 on
 * runs of zeros (empty relation pages in a base backup). So decompression slices adapt:
 * they start small, grow while output stays modest, and shrink after a burst, keeping
 * one call's output to a few MiB.
 */
const DSLICE_MIN = 64;
const DSLICE_START = 1024;
const DSLICE_MAX = 64 * 1024;
const BURST_HIGH = 4 * 1024 * 1024;
const BURST_LOW = 1024 * 1024;

/** An empty skippable frame (magic 0x184D2A50, size 0). */
const EMPTY_SKIPPABLE_FRAME = Uint8Array.of(0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0);

/**
 * zstd-codec's build has a fixed 16 MiB linear memory (it declares a 256-page maximum and
 * cannot grow). That holds the level-1..19 windows (<= 8 MiB) but not `--long`/`--ultra`
 * windows; those fail with a clear E_CODEC (use native zstd or the zstd CLI for them).
 */
const WASM_MEMORY_MIB = 16;
/** Highest level whose compressor fits that memory (measured: 10 and up abort with OOM). */
export const ZSTD_WASM_MAX_LEVEL = 9;
let clampWarned = false;

let bindingPromise: Promise<WasmBinding> | undefined;

/**
 * Instantiate the WebAssembly module once per process (zstd-codec's own `run()` makes a
 * new instance per call). We drive the embind classes directly rather than
 * zstd-codec's Transform wrappers: those overwrite `_final`, never free the native
 * objects, and give no way to see truncation.
 */
function loadWasm(): Promise<WasmBinding> {
  bindingPromise ??= new Promise<WasmBinding>((resolve, reject) => {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- zstd-codec ships CommonJS without types
      const instantiate = require('zstd-codec/lib/zstd-codec-binding-wasm.js') as (m: object) => void;
      const Module = {
        // Emscripten prints aborts to the console; the thrown error already carries them.
        print: () => undefined,
        printErr: () => undefined,
        // Resolve with a plain object: the emscripten Module is a thenable (`Module.then`),
        // and a promise resolved with it never settles.
        onRuntimeInitialized: () =>
          resolve({
            ZstdCompressStreamBinding: (Module as unknown as WasmBinding).ZstdCompressStreamBinding,
            ZstdDecompressStreamBinding: (Module as unknown as WasmBinding).ZstdDecompressStreamBinding,
          }),
        onAbort: (what: unknown) => reject(new Error(`zstd-codec failed to start: ${String(what)}`)),
      };
      instantiate(Module);
    } catch (e) {
      reject(e instanceof Error ? e : new Error(String(e)));
    }
  });
  return bindingPromise;
}

/**
 * After an emscripten abort (e.g. out of memory) the instance is dead for every stream:
 * drop it so the next stream gets a fresh one, and say what happened.
 */
function wasmFailure(e: unknown, direction: 'compress' | 'decompress'): Error {
  const text = e instanceof Error ? e.message : String(e);
  if (!/abort\(|OOM/.test(text)) return zstdError(e, IMPLEMENTATION, direction);
  bindingPromise = undefined;
  if (/OOM/.test(text)) {
    return new DbcrateError(
      ErrorCodes.CODEC,
      direction === 'decompress'
        ? `zstd (WebAssembly) ran out of memory: the data needs a larger window than the ${WASM_MEMORY_MIB} MiB ` +
            'the WebAssembly build can hold (made with zstd --long or --ultra?)'
        : `zstd (WebAssembly) ran out of its ${WASM_MEMORY_MIB} MiB of memory while compressing`,
      { hint: 'Use the native zstd implementation (zstd-napi), or decompress with the zstd CLI.', cause: e },
    );
  }
  return zstdError(e, IMPLEMENTATION, direction);
}

/**
 * One wasm stream object per Duplex. embind objects live in the module's fixed heap and
 * are not garbage-collected, so each is deleted exactly once: when the generator ends, or
 * when the Duplex closes (destroyed while waiting for input, its generator never resumes).
 */
class WasmStreamHolder {
  private stream?: WasmStream;
  private released = false;

  open(create: () => WasmStream): WasmStream {
    if (this.released) throw new Error('stream already closed');
    this.stream = create();
    return this.stream;
  }

  release = (): void => {
    if (this.released) return;
    this.released = true;
    try {
      this.stream?.delete();
    } catch {
      // a dead (aborted) instance may throw here; that must not mask the real error
    }
  };
}

function view(buf: Buffer): Uint8Array {
  // A plain Uint8Array: the binding copies via `new chunk.constructor(memory, ...)`,
  // which for a Buffer would hit the deprecated Buffer() constructor.
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/**
 * zstd compiled to WebAssembly (zstd-codec): the fallback when the native addon cannot
 * load. Single-threaded, ~3-6x slower than native; output is standard zstd frames
 * (without a content checksum: zstd-codec's stream API offers no parameters).
 */
export class ZstdWasmCodec implements Codec {
  readonly name = 'zstd';
  readonly extension = 'zst';
  readonly implementation = IMPLEMENTATION;

  compressor(opts: CompressOptions = {}): Duplex {
    let level = opts.level ?? ZSTD_DEFAULT_LEVEL;
    checkCompressOptions(level, opts.threads ?? 0);
    if (level > ZSTD_WASM_MAX_LEVEL) {
      // A fallback that fails the backup would be worse than one that compresses a bit less.
      if (!clampWarned) {
        clampWarned = true;
        logger().warn(
          { requested: level, used: ZSTD_WASM_MAX_LEVEL },
          `zstd level ${level} needs more memory than the WebAssembly zstd has; compressing at level ${ZSTD_WASM_MAX_LEVEL}`,
        );
      }
      level = ZSTD_WASM_MAX_LEVEL;
    }
    const holder = new WasmStreamHolder();
    return generatorDuplex(async function* (input) {
      const b = await loadWasm();
      const stream = holder.open(() => new b.ZstdCompressStreamBinding());
      const out: Buffer[] = [];
      const collect = (arr: Uint8Array): void => {
        if (arr.length > 0) out.push(Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength));
      };
      try {
        if (!stream.begin(level)) throw new Error(`cannot start a level ${level} compression stream`);
        for await (const chunk of input) {
          for (let i = 0; i < chunk.length; i += SLICE) {
            if (!stream.transform(view(chunk.subarray(i, i + SLICE)), collect))
              throw new Error('compression failed');
            yield* out.splice(0);
          }
        }
        if (!stream.end(collect)) throw new Error('could not finish the frame');
        yield* out.splice(0);
      } catch (e) {
        throw wasmFailure(e, 'compress');
      } finally {
        holder.release();
      }
    }, holder.release);
  }

  compressBuffer(data: Uint8Array, opts: CompressOptions = {}): Promise<Buffer> {
    return throughStage(this.compressor(opts), data);
  }

  decompressBuffer(data: Uint8Array): Promise<Buffer> {
    return throughStage(this.decompressor(), data);
  }

  decompressor(): Duplex {
    const holder = new WasmStreamHolder();
    return generatorDuplex(async function* (input) {
      const b = await loadWasm();
      const stream = holder.open(() => new b.ZstdDecompressStreamBinding());
      const scanner = new ZstdFrameScanner();
      const out: Buffer[] = [];
      const collect = (arr: Uint8Array): void => {
        if (arr.length > 0) out.push(Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength));
      };
      const corrupt = (): Error => new Error('the decoder rejected the data');
      try {
        if (!stream.begin()) throw new Error('cannot start a decompression stream');
        let slice = DSLICE_START;
        for await (const chunk of input) {
          scanner.update(chunk);
          for (let i = 0; i < chunk.length;) {
            const part = chunk.subarray(i, i + slice);
            i += part.length;
            if (!stream.transform(view(part), collect)) throw corrupt();
            const produced = out.reduce((n, b) => n + b.length, 0);
            if (produced > BURST_HIGH) slice = Math.max(DSLICE_MIN, slice >> 1);
            else if (produced < BURST_LOW) slice = Math.min(DSLICE_MAX, slice << 1);
            yield* out.splice(0);
          }
        }
        scanner.finish();
        // The binding stops calling libzstd once its input is used up, which could leave
        // decoded bytes inside libzstd; one more (empty, skippable) frame flushes them.
        if (!stream.transform(EMPTY_SKIPPABLE_FRAME, collect)) throw corrupt();
        if (!stream.end(collect)) throw corrupt();
        yield* out.splice(0);
      } catch (e) {
        throw wasmFailure(e, 'decompress');
      } finally {
        holder.release();
      }
    }, holder.release);
  }
}

/** Resolves once the WebAssembly module is instantiated (useful to fail fast at startup). */
export async function zstdWasmReady(): Promise<void> {
  await loadWasm();
}
