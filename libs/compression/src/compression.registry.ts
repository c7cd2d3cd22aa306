import { DbcrateError, ErrorCodes, PluginRegistry, logger } from '@dbcrate/core';
import type { Codec, ZstdImplementation } from './codec';
import { ZstdNapiCodec, loadZstdNapi } from './zstd-napi.codec';
import { ZstdWasmCodec } from './zstd-wasm.codec';

export interface GetCodecOptions {
  /** auto (default): native zstd-napi, or the WebAssembly build when the addon cannot load. */
  implementation?: ZstdImplementation;
}

let native: ZstdNapiCodec | undefined;
let wasm: ZstdWasmCodec | undefined;
let registry: PluginRegistry<Codec> | undefined;
let warned = false;

function nativeCodec(): ZstdNapiCodec {
  native ??= new ZstdNapiCodec();
  return native;
}

function wasmCodec(): ZstdWasmCodec {
  wasm ??= new ZstdWasmCodec();
  return wasm;
}

/** True when the native addon loads; `reason` says why not otherwise. */
export function zstdNativeStatus(): { available: boolean; reason?: string } {
  const { binding, error } = loadZstdNapi();
  return binding ? { available: true } : { available: false, reason: error?.message };
}

function zstdCodec(implementation: ZstdImplementation): Codec {
  switch (implementation) {
    case 'native': {
      const status = zstdNativeStatus();
      if (!status.available) {
        throw new DbcrateError(
          ErrorCodes.CONFIG,
          `the native zstd module (zstd-napi) cannot load: ${status.reason}`,
          {
            hint:
              'Rebuild it with `npm rebuild zstd-napi` (g++ and make are needed; package.json must allow its ' +
              'install script), or choose the WebAssembly implementation.',
          },
        );
      }
      return nativeCodec();
    }
    case 'wasm':
      return wasmCodec();
    case 'auto': {
      const status = zstdNativeStatus();
      if (status.available) return nativeCodec();
      if (!warned) {
        warned = true;
        logger().warn(
          { reason: status.reason },
          'zstd-napi (native zstd) cannot load; using zstd-codec (WebAssembly), which is several times slower',
        );
      }
      return wasmCodec();
    }
    default:
      throw new DbcrateError(ErrorCodes.CONFIG, `unknown zstd implementation "${String(implementation)}"`, {
        hint: 'Use auto, native or wasm.',
      });
  }
}

/**
 * Codecs by name and by file extension. Holds the `auto` choice per codec, so object
 * names ("….zst") resolve to the best implementation this process can load.
 */
export function codecRegistry(): PluginRegistry<Codec> {
  if (!registry) {
    registry = new PluginRegistry<Codec>('codec');
    registry.register(zstdCodec('auto'));
  }
  return registry;
}

export function getCodec(name = 'zstd', opts: GetCodecOptions = {}): Codec {
  const implementation = opts.implementation ?? 'auto';
  if (name === 'zstd' && implementation !== 'auto') return zstdCodec(implementation);
  const codec = codecRegistry().byName(name);
  if (!codec) throw unknown(`compression "${name}"`);
  return codec;
}

/** The codec for an object-name extension such as "zst" or ".zst". */
export function getCodecByExtension(extension: string, opts: GetCodecOptions = {}): Codec {
  const codec = codecRegistry().byExtension(extension);
  if (!codec) throw unknown(`compressed file extension "${extension}"`);
  return getCodec(codec.name, opts);
}

function unknown(what: string): DbcrateError {
  return new DbcrateError(ErrorCodes.CONFIG, `unknown ${what}`, {
    hint: `Known codecs: ${codecRegistry()
      .names()
      .map((n) => `${n} (.${codecRegistry().byName(n)?.extension})`)
      .join(', ')}.`,
  });
}
