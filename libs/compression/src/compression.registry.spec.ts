import { ErrorCodes } from '@dbcrate/core';
import { Writable } from 'node:stream';
import { getCodec, getCodecByExtension, codecRegistry, zstdNativeStatus } from './compression.registry';

describe('compression registry', () => {
  it('defaults to zstd served by the native addon', () => {
    expect(zstdNativeStatus().available).toBe(true);
    const codec = getCodec();
    expect(codec.name).toBe('zstd');
    expect(codec.extension).toBe('zst');
    expect(codec.implementation).toBe('zstd-napi');
  });

  it('serves an explicit implementation', () => {
    expect(getCodec('zstd', { implementation: 'native' }).implementation).toBe('zstd-napi');
    expect(getCodec('zstd', { implementation: 'wasm' }).implementation).toBe('zstd-codec');
  });

  it('finds codecs by extension, with or without the dot', () => {
    expect(getCodecByExtension('zst').name).toBe('zstd');
    expect(getCodecByExtension('.zst', { implementation: 'wasm' }).implementation).toBe('zstd-codec');
    expect(codecRegistry().names()).toEqual(['zstd']);
  });

  it('refuses unknown names and extensions with E_CONFIG naming what exists', () => {
    expect(() => getCodec('lz4')).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
    expect(() => getCodecByExtension('gz')).toThrow(/unknown compressed file extension "gz"/);
    try {
      getCodec('brotli');
    } catch (e) {
      expect((e as { hint?: string }).hint).toMatch(/zstd \(\.zst\)/);
    }
  });

  it('falls back to WebAssembly when zstd-napi cannot load, and says so once', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    jest.isolateModules(() => {
      jest.doMock('zstd-napi/binding', () => {
        throw new Error('simulated: binding.node not built');
      });
      /* eslint-disable @typescript-eslint/no-require-imports -- a fresh module graph with the mock */
      const core = require('@dbcrate/core') as typeof import('@dbcrate/core');
      const fresh = require('./compression.registry') as typeof import('./compression.registry');
      /* eslint-enable @typescript-eslint/no-require-imports */
      core.setLogger(core.createLogger({ level: 'warn', destination: sink }));
      expect(fresh.zstdNativeStatus()).toEqual({
        available: false,
        reason: 'simulated: binding.node not built',
      });
      expect(fresh.getCodec().implementation).toBe('zstd-codec');
      expect(fresh.getCodecByExtension('zst').implementation).toBe('zstd-codec');
      expect(() => fresh.getCodec('zstd', { implementation: 'native' })).toThrow(
        expect.objectContaining({ code: ErrorCodes.CONFIG, message: expect.stringMatching(/zstd-napi/) }),
      );
    });
    jest.dontMock('zstd-napi/binding');
    expect(lines.filter((l) => l.includes('WebAssembly'))).toHaveLength(1);
  });
});
