import { createHash } from 'node:crypto';

/**
 * The per-file checksums of the PostgreSQL backup_manifest a pgdata backup carries (for
 * `pg_verifybackup`). CRC-32C is what pg_basebackup writes by default: it catches
 * accidental damage, which is all this manifest can do (an unkeyed checksum inside the
 * encryption authenticates nothing; the parts are authenticated by the sha256 of each one
 * in the signed dbcrate manifest, checked before anything is extracted). SHA-256 costs
 * about as much CPU as the whole zstd compression of a typical cluster, so it is the
 * fallback, not the default.
 */
export type ManifestChecksumAlgorithm = 'CRC32C' | 'SHA256';

export interface FileChecksum {
  update(data: Uint8Array): void;
  /** Hex, as backup_manifest spells it. */
  digest(): string;
}

type Crc32c = (input: Uint8Array, initial?: number) => number;
let crc32c: Crc32c | null | undefined;
let loadError: string | undefined;

/** The native CRC-32C (SSE 4.2 / ARMv8 CRC instructions), or null when its addon does not load here. */
function nativeCrc32c(): Crc32c | null {
  if (crc32c === undefined) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded lazily: a platform without the prebuilt addon falls back to SHA-256
      crc32c = (require('@node-rs/crc32') as { crc32c: Crc32c }).crc32c;
    } catch (e) {
      crc32c = null;
      loadError = e instanceof Error ? e.message : String(e);
    }
  }
  return crc32c;
}

/**
 * CRC-32C where its native implementation loads, else SHA-256 (both understood by
 * pg_verifybackup); `fallback` says why it fell back, for a warning.
 */
export function defaultManifestChecksum(): { algorithm: ManifestChecksumAlgorithm; fallback?: string } {
  return nativeCrc32c()
    ? { algorithm: 'CRC32C' }
    : { algorithm: 'SHA256', fallback: `@node-rs/crc32 does not load here (${loadError})` };
}

export function fileChecksum(algorithm: ManifestChecksumAlgorithm): FileChecksum {
  if (algorithm === 'SHA256') {
    const h = createHash('sha256');
    return { update: (d) => void h.update(d), digest: () => h.digest('hex') };
  }
  const crc = nativeCrc32c();
  if (!crc) throw new Error('CRC-32C is not available on this platform');
  let state = 0;
  return {
    update: (d) => {
      state = crc(d, state);
    },
    digest: () => {
      // PostgreSQL hex-encodes the uint32's bytes in memory order: little-endian on every
      // platform the addon is built for (a big-endian host gets no addon, so SHA-256)
      const out = Buffer.alloc(4);
      out.writeUInt32LE(state >>> 0);
      return out.toString('hex');
    },
  };
}

export function checksumOf(algorithm: ManifestChecksumAlgorithm, data: Uint8Array): string {
  const c = fileChecksum(algorithm);
  c.update(data);
  return c.digest();
}
