import { decryptKey, generateKey, readKeys, type Key, type PrivateKey, type PublicKey } from 'openpgp';
import { DbcrateError, ErrorCodes, registerSecret } from '@dbcrate/core';
import type { DecryptionKey, RecipientKey } from './cipher';
import { ENCRYPT_CONFIG, KEY_CONFIG, fullConfig } from './openpgp.config';

export interface GenerateKeyPairOptions {
  name: string;
  email?: string;
  /** Protects the private key; registered as a secret so it never reaches a log. */
  passphrase?: string;
  /** curve25519 (default): Ed25519 primary + Curve25519 ECDH subkey. rsa4096 is slow to generate. */
  algorithm?: 'curve25519' | 'rsa4096';
}

export interface GeneratedKeyPair {
  publicArmored: string;
  privateArmored: string;
  /** Upper-case hex fingerprint of the primary key. */
  fingerprint: string;
}

const fpr = (k: { getFingerprint(): string }): string => k.getFingerprint().toUpperCase();
const keyIdsOf = (k: Key): string[] => k.getKeys().map((s) => s.getKeyID().toHex().toUpperCase());

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * A v4 key pair GnuPG 2.2 imports and uses: Ed25519 (legacy EdDSA) primary for
 * certification, Curve25519 (legacy ECDH, "cv25519") subkey for encryption — openpgp v6
 * calls these curves ed25519Legacy/curve25519Legacy. No expiry: a backup must stay
 * decryptable for as long as it is kept.
 */
export async function generateKeyPair(opts: GenerateKeyPairOptions): Promise<GeneratedKeyPair> {
  if (opts.passphrase) registerSecret(opts.passphrase);
  const algorithm = opts.algorithm ?? 'curve25519';
  let pair: { publicKey: string; privateKey: string };
  try {
    pair = await generateKey({
      ...(algorithm === 'rsa4096'
        ? { type: 'rsa', rsaBits: 4096 }
        : { type: 'ecc', curve: 'curve25519Legacy' }),
      userIDs: [{ name: opts.name, ...(opts.email ? { email: opts.email } : {}) }],
      passphrase: opts.passphrase || undefined,
      keyExpirationTime: 0,
      format: 'armored',
      config: KEY_CONFIG,
    });
  } catch (e) {
    throw new DbcrateError(ErrorCodes.USAGE, `cannot generate a key pair: ${message(e)}`, {
      hint: 'Check the name and e-mail address.',
      cause: e,
    });
  }
  const [pub] = await readKeys({ armoredKeys: pair.publicKey });
  return { publicArmored: pair.publicKey, privateArmored: pair.privateKey, fingerprint: fpr(pub) };
}

/** Parse armored or binary key material; anything unparsable is E_KEY_INVALID. */
async function parseKeys(input: string | Uint8Array, what: string): Promise<Key[]> {
  try {
    const text =
      typeof input === 'string' ? input : looksArmored(input) ? Buffer.from(input).toString('utf8') : null;
    if (text !== null) {
      const blocks = text.match(
        /-----BEGIN PGP [A-Z ]*KEY BLOCK-----[\s\S]*?-----END PGP [A-Z ]*KEY BLOCK-----/g,
      );
      if (!blocks) throw new Error('no "-----BEGIN PGP ... KEY BLOCK-----" ... "-----END ..." block');
      // openpgp reads only the first armor block: read each, so extra keys are seen, not ignored.
      return (await Promise.all(blocks.map((armoredKeys) => readKeys({ armoredKeys })))).flat();
    }
    return await readKeys({ binaryKeys: input as Uint8Array });
  } catch (e) {
    throw new DbcrateError(ErrorCodes.KEY_INVALID, `not a valid OpenPGP ${what}: ${message(e)}`, {
      hint: 'Give an armored or binary key as written by `dbcrate keys generate` or `gpg --export`.',
      cause: e,
    });
  }
}

function looksArmored(b: Uint8Array): boolean {
  return Buffer.from(b.subarray(0, 256)).toString('latin1').includes('-----BEGIN PGP');
}

function single(keys: Key[], what: string): Key {
  if (keys.length !== 1) {
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `the ${what} file holds ${keys.length} keys (${keys.map(fpr).join(', ')}); one key per file is expected`,
      { hint: 'Export one key: gpg --export --armor <FINGERPRINT>, and pass each recipient separately.' },
    );
  }
  return keys[0];
}

function requireV4(key: Key, what: string): void {
  const version = key.keyPacket.version;
  if (version !== 4) {
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `${what} ${fpr(key)} is a version ${version} key; dbcrate uses v4 keys so that GnuPG 2.2 can decrypt backups`,
      { hint: 'Generate a v4 key: dbcrate keys generate, or gpg --quick-gen-key NAME cv25519 (or rsa4096).' },
    );
  }
}

/**
 * A recipient (public) key for encrypting backups.
 *
 * A private key is refused rather than silently reduced to its public part: the agent
 * must never hold a private key for what it produces (BRIEF), and a private key file on
 * a database host is exactly the mistake to surface, not to accept.
 */
export async function loadRecipientKey(input: string | Uint8Array): Promise<RecipientKey> {
  const key = single(await parseKeys(input, 'public key'), 'public key');
  if (key.isPrivate()) {
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `key ${fpr(key)} is a private key; encrypting backups needs only the public key`,
      {
        hint:
          'Give the public key (gpg --export --armor <FINGERPRINT>, or the .pub.asc from dbcrate keys generate) ' +
          'and keep the private key off the database host.',
      },
    );
  }
  requireV4(key, 'public key');
  let encryptionKey: { getFingerprint(): string };
  try {
    encryptionKey = await (key as PublicKey).getEncryptionKey(
      undefined,
      new Date(),
      undefined,
      fullConfig(ENCRYPT_CONFIG),
    );
  } catch (e) {
    // openpgp reports a key made "in the future" like an expired one; say what it is.
    const now = new Date();
    const created = [key, ...key.getSubkeys()].map((k) => k.getCreationTime());
    const newest = new Date(Math.max(...created.map((d) => d.getTime())));
    if (newest > now) {
      throw new DbcrateError(
        ErrorCodes.KEY_INVALID,
        `public key ${fpr(key)} was created at ${newest.toISOString()}, after this machine's clock (${now.toISOString()})`,
        {
          hint: "this machine's clock is behind: set it right (e.g. enable NTP with timedatectl set-ntp true) and retry",
          cause: e,
        },
      );
    }
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `public key ${fpr(key)} has no usable encryption key: ${message(e)}`,
      {
        hint: 'The key or its encryption subkey may be expired or revoked, or be for signing only.',
        cause: e,
      },
    );
  }
  return {
    armored: key.armor(),
    fingerprint: fpr(key),
    encryptionKeyIds: [fpr(encryptionKey)],
    userIds: key.getUserIDs(),
  };
}

/**
 * A private key ready to decrypt. Passphrase errors are E_PASSPHRASE (wrong, or missing
 * for a protected key); anything else wrong with the key is E_KEY_INVALID.
 */
export async function loadDecryptionKey(
  input: string | Uint8Array,
  passphrase?: string,
): Promise<DecryptionKey> {
  if (passphrase) registerSecret(passphrase);
  const key = single(await parseKeys(input, 'private key'), 'private key');
  if (!key.isPrivate()) {
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `key ${fpr(key)} is a public key; decrypting needs the private key`,
      {
        hint: 'Give the private key (gpg --export-secret-keys --armor <FINGERPRINT>, or the .key.asc file).',
      },
    );
  }
  let privateKey = key as PrivateKey;
  if (!privateKey.isDecrypted()) {
    if (passphrase === undefined) {
      throw new DbcrateError(ErrorCodes.PASSPHRASE, `private key ${fpr(key)} is protected by a passphrase`, {
        hint: 'Put the passphrase in an environment variable and name it with --passphrase-env VAR.',
      });
    }
    try {
      privateKey = await decryptKey({ privateKey, passphrase, config: KEY_CONFIG });
    } catch (e) {
      if (/passphrase/i.test(message(e))) {
        throw new DbcrateError(ErrorCodes.PASSPHRASE, `wrong passphrase for private key ${fpr(key)}`, {
          hint: 'Check the value of the environment variable named by --passphrase-env.',
        });
      }
      throw new DbcrateError(ErrorCodes.KEY_INVALID, `cannot unlock private key ${fpr(key)}: ${message(e)}`, {
        cause: e,
      });
    }
  }
  const usable = await privateKey
    .getDecryptionKeys(undefined, null, undefined, fullConfig(KEY_CONFIG))
    .catch(() => []);
  if (usable.length === 0) {
    throw new DbcrateError(ErrorCodes.KEY_INVALID, `private key ${fpr(key)} has no key that can decrypt`, {
      hint: 'Use the key pair the backups were encrypted to (it has an encryption subkey).',
    });
  }
  return { fingerprint: fpr(key), keyIds: keyIdsOf(key), key: privateKey };
}

/** Re-parse a RecipientKey for encryption (RecipientKey stays plain data: it goes into config and manifests). */
export async function recipientPublicKey(recipient: RecipientKey): Promise<PublicKey> {
  const key = single(await parseKeys(recipient.armored, 'public key'), 'public key');
  if (key.isPrivate()) return key.toPublic();
  return key as PublicKey;
}
