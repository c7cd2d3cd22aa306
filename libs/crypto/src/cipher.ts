import type { Duplex } from 'node:stream';
import type { StagePlugin } from '@dbcrate/core';

export interface RecipientKey {
  /** Armored public key. */
  armored: string;
  /** Upper-case hex fingerprint of the primary key. */
  fingerprint: string;
  /** Fingerprints of the encryption subkeys (what a PKESK packet names). */
  encryptionKeyIds: string[];
  userIds: string[];
}

export interface DecryptionKey {
  fingerprint: string;
  /** The decrypted openpgp PrivateKey object; opaque outside libs/crypto. */
  key: unknown;
}

/** A cipher stage: encrypts to public keys, decrypts with a private key. */
export interface Cipher extends StagePlugin {
  encryptor(recipients: RecipientKey[]): Duplex;
  decryptor(keys: DecryptionKey[]): Duplex;
}
