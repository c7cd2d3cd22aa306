export * from './codec';
export {
  getCodec,
  getCodecByExtension,
  codecRegistry,
  zstdNativeStatus,
  type GetCodecOptions,
} from './compression.registry';
export { ZstdNapiCodec, ZSTD_DEFAULT_THREADS, zstdNapiVersion } from './zstd-napi.codec';
export { ZstdWasmCodec, ZSTD_WASM_MAX_LEVEL, zstdWasmReady } from './zstd-wasm.codec';
export { ZstdFrameScanner } from './zstd-frame.scanner';
