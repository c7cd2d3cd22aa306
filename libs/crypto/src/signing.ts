import {
  createMessage,
  decryptKey,
  generateKey,
  readKey,
  readKeys,
  readSignature,
  sign,
  verify,
  type Key,
  type PrivateKey,
  type PublicKey,
  type RawNotation,
  type Signature,
} from 'openpgp';
import { DbcrateError, ErrorCodes, registerSecret } from '@dbcrate/core';
import { KEY_CONFIG, fullConfig } from './openpgp.config';

/**
 * Producer signing keys and signer trust (docs/signing.md).
 *
 * A host signs what it writes with its own key (Ed25519, v4, as GnuPG 2.2 reads it), so
 * that someone who can write to the bucket and knows the organisation's *public* key still
 * cannot make a backup that restore accepts: readers check signatures against the signer
 * keys they trust. Manifests get a detached armored signature (`gpg --verify m.sig m`);
 * WAL objects are signed inside their encrypted message (see OpenPgpCipher).
 */

/** A host's unlocked signing key. Plain data, so it can be handed to worker threads. */
export interface SigningKey {
  /** Upper-case hex fingerprint of the primary key. */
  fingerprint: string;
  /** The unlocked private key, armored; never written anywhere. */
  armored: string;
}

/** A signer key a reader trusts (public part only). */
export interface TrustedKey {
  fingerprint: string;
  armored: string;
}

/**
 * What a reader accepts: objects signed by one of `trusted`; with `allowUnsigned` also
 * objects without a (checkable) signature, as archives made before signing have.
 */
export interface TrustPolicy {
  trusted: TrustedKey[];
  allowUnsigned?: boolean;
}

/** The outcome of a check: `signer` when a trusted key signed it, else why not. */
export type TrustVerdict =
  { trusted: true; signer?: string; unsigned?: boolean } | { trusted: false; reason: string };

export interface GenerateSigningKeyOptions {
  name: string;
  email?: string;
  passphrase?: string;
}

const fpr = (k: { getFingerprint(): string }): string => k.getFingerprint().toUpperCase();
const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** Ed25519 (legacy EdDSA, what GnuPG 2.2 calls ed25519) primary key that signs; no subkeys, no expiry. */
export async function generateSigningKey(
  opts: GenerateSigningKeyOptions,
): Promise<{ publicArmored: string; privateArmored: string; fingerprint: string }> {
  if (opts.passphrase) registerSecret(opts.passphrase);
  let pair: { publicKey: string; privateKey: string };
  try {
    pair = await generateKey({
      type: 'ecc',
      curve: 'ed25519Legacy',
      subkeys: [],
      userIDs: [{ name: opts.name, ...(opts.email ? { email: opts.email } : {}) }],
      passphrase: opts.passphrase || undefined,
      keyExpirationTime: 0,
      format: 'armored',
      config: KEY_CONFIG,
    });
  } catch (e) {
    throw new DbcrateError(ErrorCodes.USAGE, `cannot generate a signing key: ${message(e)}`, { cause: e });
  }
  const pub = await readKey({ armoredKey: pair.publicKey });
  return { publicArmored: pair.publicKey, privateArmored: pair.privateKey, fingerprint: fpr(pub) };
}

async function readAll(text: string, what: string): Promise<Key[]> {
  const blocks = text.match(
    /-----BEGIN PGP [A-Z ]*KEY BLOCK-----[\s\S]*?-----END PGP [A-Z ]*KEY BLOCK-----/g,
  );
  try {
    if (!blocks) throw new Error('no "-----BEGIN PGP ... KEY BLOCK-----" block');
    return (await Promise.all(blocks.map((armoredKeys) => readKeys({ armoredKeys })))).flat();
  } catch (e) {
    throw new DbcrateError(ErrorCodes.KEY_INVALID, `not a valid OpenPGP ${what}: ${message(e)}`, {
      hint: 'give an armored key as written by `dbcrate keys generate-signing` or `gpg --export --armor`',
      cause: e,
    });
  }
}

async function requireSigningCapable(key: Key, what: string): Promise<void> {
  if (key.keyPacket.version !== 4) {
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `${what} ${fpr(key)} is a version ${key.keyPacket.version} key; dbcrate signs with v4 keys (GnuPG 2.2 checks them)`,
      { hint: 'generate one with dbcrate keys generate-signing' },
    );
  }
  try {
    await key.getSigningKey(undefined, null, undefined, fullConfig(KEY_CONFIG));
  } catch (e) {
    throw new DbcrateError(ErrorCodes.KEY_INVALID, `${what} ${fpr(key)} cannot sign: ${message(e)}`, {
      hint: 'use a signing key from dbcrate keys generate-signing (an encryption key cannot sign)',
      cause: e,
    });
  }
}

/** The host's signing key (a private key, unlocked with the passphrase if it has one). */
export async function loadSigningKey(armored: string, passphrase?: string): Promise<SigningKey> {
  if (passphrase) registerSecret(passphrase);
  const keys = await readAll(armored, 'signing key');
  if (keys.length !== 1) {
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `the signing key file holds ${keys.length} keys; one is expected`,
    );
  }
  const key = keys[0];
  if (!key.isPrivate()) {
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `key ${fpr(key)} is a public key; signing needs the private key`,
      {
        hint: 'give the .sign.key.asc file from dbcrate keys generate-signing (readers get the .sign.pub.asc)',
      },
    );
  }
  let priv = key as PrivateKey;
  if (!priv.isDecrypted()) {
    if (passphrase === undefined) {
      throw new DbcrateError(ErrorCodes.PASSPHRASE, `signing key ${fpr(key)} is protected by a passphrase`, {
        hint: 'name the environment variable holding it with --signing-passphrase-env VAR',
      });
    }
    try {
      priv = await decryptKey({ privateKey: priv, passphrase, config: KEY_CONFIG });
    } catch (e) {
      throw new DbcrateError(ErrorCodes.PASSPHRASE, `wrong passphrase for signing key ${fpr(key)}`, {
        hint: 'check the environment variable named by --signing-passphrase-env',
        cause: e,
      });
    }
  }
  await requireSigningCapable(priv, 'signing key');
  return { fingerprint: fpr(priv), armored: priv.armor() };
}

/** The fingerprint of a signing key file, without unlocking it (the agent compares it with its own). */
export async function signingKeyFingerprint(armored: string): Promise<string> {
  const keys = await readAll(armored, 'signing key');
  if (keys.length !== 1)
    throw new DbcrateError(ErrorCodes.KEY_INVALID, `the signing key file holds ${keys.length} keys`);
  return fpr(keys[0]);
}

/**
 * Signer keys to trust: public keys only. A private key given as one is refused: a reader
 * holding a signer's private key can sign, i.e. forge, what it is meant to check, and the key
 * should not have left the producing host.
 */
export async function loadTrustedKeys(texts: string[]): Promise<TrustedKey[]> {
  const out: TrustedKey[] = [];
  for (const text of texts) {
    for (const k of await readAll(text, 'signer public key')) {
      if (k.isPrivate()) {
        throw new DbcrateError(
          ErrorCodes.KEY_INVALID,
          `the trusted signer key ${fpr(k)} is given as a private key; trust needs only its public key`,
          {
            hint: 'give the .sign.pub.asc file (gpg --export --armor), and remove the private key from this host: whoever holds it can sign forged backups',
          },
        );
      }
      const pub = k as PublicKey;
      await requireSigningCapable(pub, 'trusted key');
      if (!out.some((t) => t.fingerprint === fpr(pub)))
        out.push({ fingerprint: fpr(pub), armored: pub.armor() });
    }
  }
  return out;
}

// Parsing an armored key costs more than an Ed25519 signature: keep the parsed objects.
const parsed = new Map<string, Promise<Key>>();
function keyObject(armored: string): Promise<Key> {
  let k = parsed.get(armored);
  if (!k) {
    k = readKey({ armoredKey: armored });
    if (parsed.size > 64) parsed.clear();
    parsed.set(armored, k);
  }
  return k;
}

/** @internal the openpgp objects, for OpenPgpCipher. */
export async function signingKeyObject(key: SigningKey): Promise<PrivateKey> {
  return (await keyObject(key.armored)) as PrivateKey;
}

/** @internal */
export async function trustedKeyObjects(keys: TrustedKey[]): Promise<PublicKey[]> {
  return Promise.all(keys.map(async (k) => (await keyObject(k.armored)) as PublicKey));
}

/** The primary fingerprint of the trusted key that made a signature (it may be a signing subkey's). */
async function signerOf(keyID: { toHex(): string }, trusted: TrustedKey[]): Promise<string> {
  const objects = await trustedKeyObjects(trusted);
  const i = objects.findIndex((k) => k.getKeys(keyID as Parameters<Key['getKeys']>[0]).length > 0);
  return i >= 0 ? trusted[i].fingerprint : keyID.toHex().toUpperCase();
}

/** A detached, armored signature of exactly `data` (what `gpg --verify data.sig data` checks). */
export async function signDetached(data: Uint8Array, key: SigningKey): Promise<string> {
  return sign({
    message: await createMessage({ binary: data }),
    signingKeys: await signingKeyObject(key),
    detached: true,
    format: 'armored',
    config: KEY_CONFIG,
  });
}

/**
 * Check a detached signature of `data` against the trusted keys. Never throws: the verdict
 * says why an object is not trusted. `signature` undefined means the object has none.
 * Time is not checked against this host's clock (a reader's clock behind the producer's
 * must not turn good backups into bad ones); key validity at signing time is.
 */
export async function verifyDetached(
  data: Uint8Array,
  signature: string | undefined,
  policy: TrustPolicy,
): Promise<TrustVerdict> {
  if (signature === undefined) {
    return policy.allowUnsigned
      ? { trusted: true, unsigned: true }
      : { trusted: false, reason: 'it has no signature (made before signing, or forged)' };
  }
  if (policy.trusted.length === 0) {
    return policy.allowUnsigned
      ? { trusted: true, unsigned: true }
      : { trusted: false, reason: 'no trusted signer key was given to check its signature' };
  }
  try {
    const sig = await readSignature({ armoredSignature: signature });
    const result = await verify({
      message: await createMessage({ binary: data }),
      signature: sig,
      verificationKeys: await trustedKeyObjects(policy.trusted),
      format: 'binary',
      date: null,
    });
    const errors: string[] = [];
    for (const s of result.signatures) {
      try {
        await s.verified;
        const signer = await signerOf(s.keyID, policy.trusted);
        return { trusted: true, signer };
      } catch (e) {
        errors.push(message(e));
      }
    }
    return {
      trusted: false,
      reason: `its signature is not valid from a trusted signer (${errors.join('; ') || 'no signature'})`,
    };
  } catch (e) {
    return { trusted: false, reason: `its signature cannot be read (${message(e)})` };
  }
}

/** The error readers raise for an object that is not trusted. */
export function untrustedError(what: string, reason: string): DbcrateError {
  return new DbcrateError(ErrorCodes.UNTRUSTED, `${what} is not trusted: ${reason}`, {
    hint:
      "pass the producer's signer public key with --trust FILE (or DBCRATE_TRUST); for an archive made before " +
      'signing, add --allow-unsigned after checking it by other means (docs/signing.md)',
  });
}

/** @internal notations for openpgp (human-readable, not critical: gpg shows them and accepts the signature). */
export function notationsOf(n: Record<string, string> | undefined): RawNotation[] {
  return Object.entries(n ?? {}).map(([name, value]) => ({
    name,
    value: new TextEncoder().encode(value),
    humanReadable: true,
    critical: false,
  }));
}

/**
 * @internal The signatures inside a decrypted message (openpgp's result.signatures): one
 * by a trusted signer, valid, carrying exactly the expected notations; else E_UNTRUSTED.
 * An unsigned message passes only with allowUnsigned; a badly signed one never does.
 */
export async function checkInsideSignatures(
  signatures: { keyID: { toHex(): string }; verified: Promise<unknown>; signature: Promise<Signature> }[],
  opts: { trust: TrustPolicy; notations?: Record<string, string>; what: string },
): Promise<string | undefined> {
  if (signatures.length === 0) {
    if (opts.trust.allowUnsigned) return undefined;
    throw untrustedError(opts.what, 'it has no signature (archived before signing, or forged)');
  }
  if (opts.trust.trusted.length === 0) {
    if (opts.trust.allowUnsigned) return undefined;
    throw untrustedError(opts.what, 'no trusted signer key was given to check its signature');
  }
  const problems: string[] = [];
  for (const s of signatures) {
    try {
      await s.verified;
    } catch (e) {
      problems.push(message(e));
      continue;
    }
    const packet = (await s.signature).packets[0] as unknown as { rawNotations?: RawNotation[] };
    const got = new Map((packet.rawNotations ?? []).map((n) => [n.name, new TextDecoder().decode(n.value)]));
    const wrong = Object.entries(opts.notations ?? {}).find(([k, v]) => got.get(k) !== v);
    if (wrong) {
      problems.push(
        `it is signed as ${wrong[0]}="${got.get(wrong[0]) ?? ''}", not "${wrong[1]}" (a validly signed object stored under another name)`,
      );
      continue;
    }
    return signerOf(s.keyID, opts.trust.trusted);
  }
  throw untrustedError(opts.what, problems.join('; '));
}
