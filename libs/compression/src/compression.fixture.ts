/**
 * Test helpers for the codec specs (not exported from the lib): deterministic data that
 * compresses like a database dump, and helpers to push buffers through a stage.
 */

/**
 * `bytes` of dump-like data: COPY-style text rows (compressible ~3-5x), with a run of
 * random bytes and a run of zeros every few MiB so that raw, RLE and compressed zstd
 * blocks all occur. Deterministic for a given seed.
 */
export function sampleData(bytes: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(bytes);
  let s = seed >>> 0 || 1;
  const rand = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
  const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet'];
  let pos = 0;
  let row = 0;
  while (pos < bytes) {
    if (row % 20000 === 19999) {
      // ~64 KiB incompressible, then ~64 KiB of zeros.
      for (let i = 0; i < 65536 && pos < bytes; i++) out[pos++] = rand() & 0xff;
      const end = Math.min(bytes, pos + 65536);
      out.fill(0, pos, end);
      pos = end;
    }
    const line = `${row}\t${words[rand() % 10]}-${words[rand() % 10]}\t${(rand() % 100000) / 100}\t${rand().toString(16)}\t2024-0${1 + (rand() % 9)}-1${rand() % 10} 12:00:00+00\n`;
    pos += out.write(line, pos, 'latin1');
    row++;
  }
  return out;
}

export { chunked, sha256, through } from '@dbcrate/testing';
