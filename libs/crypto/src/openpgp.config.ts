import { config as defaults, enums, type Config, type PartialConfig } from 'openpgp';

/**
 * openpgp settings in one place. The constraint behind all of them: a stock GnuPG 2.2
 * (Debian 12) must decrypt every backup and import every key we make, so that a
 * customer never depends on dbcrate to get their data back.
 */

/** Messages: SEIPD v1 (MDC), AES-256, no OpenPGP compression (zstd already ran). */
export const ENCRYPT_CONFIG: PartialConfig = {
  // SEIPD v2 / AEAD (OCB) is RFC 9580; GnuPG 2.2 cannot read it.
  aeadProtect: false,
  v6Keys: false,
  preferredSymmetricAlgorithm: enums.symmetric.aes256,
  preferredCompressionAlgorithm: enums.compression.uncompressed,
};

/**
 * Decryption streams without holding the plaintext back. With allowUnauthenticatedStream
 * false, openpgp buffers the whole plaintext of a SEIPD v1 packet in memory until its
 * MDC (a SHA-1 over everything) is checked at the very end — unbounded memory for a
 * database-sized backup. With it true, plaintext flows as it is decrypted and the MDC is
 * still checked at the end: a tampered or truncated message makes the stream *error* at
 * its end, never finish cleanly. Callers treat output as provisional until the stream
 * ends without error (the restore pipeline fails the restore on that error, and it has
 * already checked the object's sha256 against the manifest before decrypting).
 */
export const DECRYPT_CONFIG: PartialConfig = {
  allowUnauthenticatedStream: true,
};

/** Keys: v4, secret parts protected with iterated+salted S2K and CFB (what GnuPG 2.2 reads). */
export const KEY_CONFIG: PartialConfig = {
  v6Keys: false,
  aeadProtect: false,
  s2kType: enums.s2k.iterated,
};

/** Key methods (getEncryptionKey, getDecryptionKeys) want a complete Config. */
export function fullConfig(partial: PartialConfig): Config {
  return { ...defaults, ...partial };
}
