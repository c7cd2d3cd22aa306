export * from './cipher';
export { OpenPgpCipher } from './openpgp.cipher';
export { NativeOpenPgpCipher } from './native.cipher';
export {
  getCipher,
  getCipherByExtension,
  cipherRegistry,
  OPENPGP_IMPLEMENTATION_ENV,
  type GetCipherOptions,
  type OpenPgpImplementation,
} from './crypto.registry';
export {
  generateKeyPair,
  loadRecipientKey,
  loadDecryptionKey,
  type GenerateKeyPairOptions,
  type GeneratedKeyPair,
} from './keys';
export { recipientKeyIds, WILDCARD_KEY_ID } from './pgp-header.parser';
export {
  generateSigningKey,
  loadSigningKey,
  signingKeyFingerprint,
  loadTrustedKeys,
  signDetached,
  verifyDetached,
  untrustedError,
  type GenerateSigningKeyOptions,
  type SigningKey,
  type TrustedKey,
  type TrustPolicy,
  type TrustVerdict,
} from './signing';
export {
  FileKeyProvider,
  MemoryKeyProvider,
  passphraseFrom,
  readKeyFile,
  trustPaths,
  type FileKeySettings,
  type KeyProvider,
} from './key.provider';
export { loadSealingKey, openSecret, sealingKey, sealSecret, type SealingKey } from './secret.seal';
