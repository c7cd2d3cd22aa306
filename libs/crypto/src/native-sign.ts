import { createHash, createPrivateKey, sign as edSign, type Hash, type KeyObject } from 'node:crypto';
import { enums, type PrivateKey } from 'openpgp';
import { KEY_CONFIG, fullConfig } from './openpgp.config';
import { TAG, definiteLength, packetHeader } from './openpgp-packet.framing';
import { signingKeyObject, type SigningKey } from './signing';

/**
 * OpenPGP v4 signatures over binary data (signature type 0x00), made on node:crypto for
 * the keys dbcrate generates: legacy EdDSA on Ed25519 (algorithm 22), hashed with SHA-256.
 * The hash is fed as the data goes by (the caller encrypts the same chunks), so signing
 * costs one hash pass and an Ed25519 signature, with no copy of the data. What comes out is
 * what openpgp.js and GnuPG 2.2 check: a one-pass signature packet before the literal data
 * and the signature packet after it. Keys of other algorithms sign through openpgp.js.
 */

const SIG_TYPE_BINARY = 0x00;
const HASH_SHA256 = 8;
const PUBKEY_EDDSA_LEGACY = 22;

const SUB = { CREATED: 2, ISSUER_KEY_ID: 16, NOTATION: 20, ISSUER_FPR: 33 } as const;
const CRITICAL = 0x80;

export interface NativeSigner {
  /** v4 fingerprint (20 bytes) of the key that signs: the primary or a signing subkey. */
  fingerprint: Buffer;
  keyId: Buffer;
  privateKey: KeyObject;
}

/** node:crypto keys made from openpgp key packets, kept while the packet is. */
const nodeKeys = new WeakMap<object, NativeSigner | null>();

/**
 * The node:crypto signer for `key` at time `at` (when the signature will be made), or
 * undefined when its signing (sub)key is not Ed25519 (legacy). As openpgp.js's sign(), it
 * refuses a key that is expired or revoked at that time (E_KEY_INVALID via the caller):
 * checked on every call, not remembered.
 */
export async function nativeSigner(key: SigningKey, at: Date): Promise<NativeSigner | undefined> {
  const priv: PrivateKey = await signingKeyObject(key);
  const chosen = await priv.getSigningKey(undefined, at, undefined, fullConfig(KEY_CONFIG));
  let signer = nodeKeys.get(chosen.keyPacket);
  if (signer === undefined) {
    signer = fromPacket(chosen.keyPacket) ?? null;
    nodeKeys.set(chosen.keyPacket, signer);
  }
  return signer ?? undefined;
}

function fromPacket(keyPacket: object): NativeSigner | undefined {
  const packet = keyPacket as {
    version: number;
    algorithm: number;
    publicParams: { Q?: Uint8Array; oid?: { getName(): string } };
    privateParams: { seed?: Uint8Array } | null;
    getFingerprintBytes(): Uint8Array | null;
  };
  const { Q, oid } = packet.publicParams;
  const seed = packet.privateParams?.seed;
  const fpr = packet.getFingerprintBytes();
  if (
    packet.version !== 4 ||
    packet.algorithm !== enums.publicKey.eddsaLegacy ||
    oid?.getName() !== enums.curve.ed25519Legacy ||
    !Q ||
    Q.length !== 33 ||
    Q[0] !== 0x40 ||
    !seed ||
    seed.length !== 32 ||
    !fpr ||
    fpr.length !== 20
  ) {
    return undefined;
  }
  const privateKey = createPrivateKey({
    key: {
      kty: 'OKP',
      crv: 'Ed25519',
      d: Buffer.from(seed).toString('base64url'),
      x: Buffer.from(Q.subarray(1)).toString('base64url'),
    },
    format: 'jwk',
  });
  const fingerprint = Buffer.from(fpr);
  return { fingerprint, keyId: fingerprint.subarray(12), privateKey };
}

/** The one-pass signature packet that precedes the literal data (one signature, the last). */
export function onePassSignature(signer: NativeSigner): Buffer {
  const body = Buffer.concat([
    Buffer.from([3, SIG_TYPE_BINARY, HASH_SHA256, PUBKEY_EDDSA_LEGACY]),
    signer.keyId,
    Buffer.from([1]),
  ]);
  return Buffer.concat([packetHeader(TAG.ONE_PASS_SIGNATURE, body.length), body]);
}

function subpacket(type: number, body: Buffer): Buffer {
  return Buffer.concat([definiteLength(body.length + 1), Buffer.from([type]), body]);
}

function notation(name: string, value: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const v = Buffer.from(value, 'utf8');
  const head = Buffer.alloc(8);
  head[0] = 0x80; // human-readable, as gpg shows it
  head.writeUInt16BE(n.length, 4);
  head.writeUInt16BE(v.length, 6);
  return subpacket(SUB.NOTATION, Buffer.concat([head, n, v]));
}

/** A multiprecision integer of a big-endian byte string: bit count, then the bytes without leading zeros. */
function mpi(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length && bytes[i] === 0) i++;
  const rest = bytes.subarray(i);
  const bits = rest.length === 0 ? 0 : (rest.length - 1) * 8 + (32 - Math.clz32(rest[0]));
  const len = Buffer.alloc(2);
  len.writeUInt16BE(bits);
  return Buffer.concat([len, rest]);
}

/** Hashes the signed data as it passes; `packet()` then makes the signature packet. */
export class SignatureWriter {
  private readonly hash: Hash = createHash('sha256');

  constructor(
    private readonly signer: NativeSigner,
    private readonly notations: Record<string, string> = {},
    /** The time nativeSigner checked the key at. */
    private readonly created: Date,
  ) {}

  update(data: Buffer): void {
    this.hash.update(data);
  }

  packet(): Buffer {
    const time = Buffer.alloc(4);
    time.writeUInt32BE(Math.floor(this.created.getTime() / 1000));
    const hashedSubs = Buffer.concat([
      subpacket(SUB.CREATED | CRITICAL, time),
      subpacket(SUB.ISSUER_KEY_ID, this.signer.keyId),
      ...Object.entries(this.notations).map(([k, v]) => notation(k, v)),
      subpacket(SUB.ISSUER_FPR, Buffer.concat([Buffer.from([4]), this.signer.fingerprint])),
    ]);
    const hashed = Buffer.alloc(6 + hashedSubs.length);
    hashed[0] = 4;
    hashed[1] = SIG_TYPE_BINARY;
    hashed[2] = PUBKEY_EDDSA_LEGACY;
    hashed[3] = HASH_SHA256;
    hashed.writeUInt16BE(hashedSubs.length, 4);
    hashedSubs.copy(hashed, 6);
    const trailer = Buffer.alloc(6);
    trailer[0] = 4;
    trailer[1] = 0xff;
    trailer.writeUInt32BE(hashed.length, 2);
    const digest = this.hash.update(hashed).update(trailer).digest();
    // Legacy EdDSA signs the digest; R and S are written as MPIs of their bytes.
    const sig = edSign(null, digest, this.signer.privateKey);
    const body = Buffer.concat([
      hashed,
      Buffer.from([0, 0]), // no unhashed subpackets
      digest.subarray(0, 2),
      mpi(sig.subarray(0, 32)),
      mpi(sig.subarray(32)),
    ]);
    return Buffer.concat([packetHeader(TAG.SIGNATURE, body.length), body]);
  }
}
