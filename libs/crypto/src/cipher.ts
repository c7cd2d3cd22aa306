import type { Duplex } from 'node:stream';
import type { StagePlugin } from '@dbcrate/core';

export interface RecipientKey {
  /** Armored public key. */
  armored: string;
  /** Upper-case hex fingerprint of the primary key. */
  fingerprint: string;
  /** Fingerprints of the encryption subkeys (what a PKESK packet names, by their last 16 hex digits). */
  encryptionKeyIds: string[];
  userIds: string[];
}

export interface DecryptionKey {
  fingerprint: string;
  /** Upper-case 16-hex key IDs of the primary key and every subkey (what PKESK packets name). */
  keyIds: string[];
  /** The decrypted openpgp PrivateKey object; opaque outside libs/crypto. */
  key: unknown;
}

/** Sign inside the encrypted message (one pass, one object): what `gpg --decrypt` reports as a good signature. */
export interface SignInsideOptions {
  /** The host's signing key (libs/crypto signing.ts SigningKey). */
  signingKey: { fingerprint: string; armored: string };
  /** Signature notations (name@domain → value): bind the message to what it is, e.g. its WAL file name. */
  notations?: Record<string, string>;
}

/** Check the signature inside a message: signed by a trusted signer, with these notations. */
export interface VerifyInsideOptions {
  /** libs/crypto signing.ts TrustPolicy. */
  trust: { trusted: { fingerprint: string; armored: string }[]; allowUnsigned?: boolean };
  notations?: Record<string, string>;
  /** What the message is, for the error (e.g. "WAL file 000000010000000000000003"). */
  what: string;
}

export interface DecryptOptions {
  /**
   * Fingerprints the object is recorded (manifest) as encrypted to. Only used to word
   * E_WRONG_KEY: the message itself names 16-hex key IDs, these give the full names.
   */
  expectedRecipients?: string[];
  /** decryptBuffer only: refuse (E_UNTRUSTED) unless the signature inside checks out. */
  verify?: VerifyInsideOptions;
}

/** Encryption by calls (see SeipdSession): `push` may keep slices of its input, so do not reuse it. */
export interface EncryptSession {
  push(chunk: Buffer): Buffer[];
  end(): Buffer[];
}

/**
 * A cipher stage: encrypts to public keys, decrypts with a private key. Both are
 * streaming Duplexes; the decryptor fails with E_WRONG_KEY (no key of ours is a
 * recipient), E_INTEGRITY (damaged, tampered or truncated data).
 */
export interface Cipher extends StagePlugin {
  /** Which implementation serves this cipher, e.g. "native" or "openpgpjs" (same format either way). */
  readonly implementation?: string;
  encryptor(recipients: RecipientKey[]): Duplex;
  /** The same message as `encryptor()`, by calls (implementations that can do it synchronously). */
  encryptSession?(recipients: RecipientKey[]): Promise<EncryptSession>;
  decryptor(keys: DecryptionKey[], opts?: DecryptOptions): Duplex;
  /** One-shot, for small objects such as WAL files; the same message format as the stream. */
  encryptBuffer(data: Uint8Array, recipients: RecipientKey[], sign?: SignInsideOptions): Promise<Uint8Array>;
  /** One-shot; the integrity check (MDC) has passed when it resolves. */
  decryptBuffer(data: Uint8Array, keys: DecryptionKey[], opts?: DecryptOptions): Promise<Uint8Array>;
}
