import { createHash, createPublicKey, verify as edVerify, type KeyObject } from 'node:crypto';
import { enums, type Key, type Subkey } from 'openpgp';
import type { VerifyInsideOptions } from './cipher';
import { KEY_CONFIG, fullConfig } from './openpgp.config';
import { TAG } from './openpgp-packet.framing';
import { trustedKeyObjects, untrustedError } from './signing';

/**
 * The signature inside a decrypted message, checked on node:crypto, for messages shaped
 * as dbcrate signs WAL: a one-pass signature, one literal data packet and one v4 binary
 * signature by an Ed25519 key (legacy EdDSA) over SHA-256 or SHA-512, all with definite
 * lengths. The verdict is the one checkInsideSignatures gives for openpgp.js (same
 * wording): trusted signer, valid signature, the expected notations; the key must be a
 * valid signing key of the trusted key at the signature's time, and not newer than it.
 * Any other shape (compression, several signatures, partial lengths, RSA, any subpacket
 * but creation time, issuer and non-critical notations, an unhashed issuer that differs)
 * returns undefined: openpgp.js then checks it.
 */

const HASHES: Record<number, string> = { 8: 'sha256', 10: 'sha512' };
const SUB_CREATED = 2;
const SUB_ISSUER_KEY_ID = 16;
const SUB_NOTATION = 20;
const SUB_ISSUER_FPR = 33;

interface Packet {
  tag: number;
  body: Buffer;
}

/** Packets with definite lengths (new or old format); undefined on a partial or indeterminate length. */
function packets(b: Buffer): Packet[] | undefined {
  const out: Packet[] = [];
  let p = 0;
  while (p < b.length) {
    const h = b[p];
    if ((h & 0x80) === 0) return undefined;
    let tag: number;
    let len: number;
    if (h & 0x40) {
      tag = h & 0x3f;
      const l = newLength(b, p + 1);
      if (!l) return undefined;
      [len, p] = [l.len, p + 1 + l.size];
    } else {
      tag = (h >> 2) & 0xf;
      const lt = h & 3;
      if (lt === 3) return undefined;
      const size = 1 << lt;
      if (p + 1 + size > b.length) return undefined;
      len = b.readUIntBE(p + 1, size);
      p += 1 + size;
    }
    if (p + len > b.length) return undefined;
    out.push({ tag, body: b.subarray(p, p + len) });
    p += len;
  }
  return out;
}

function newLength(b: Buffer, p: number): { len: number; size: number } | undefined {
  if (p >= b.length) return undefined;
  const o = b[p];
  if (o < 192) return { len: o, size: 1 };
  if (o < 224) return p + 1 < b.length ? { len: ((o - 192) << 8) + b[p + 1] + 192, size: 2 } : undefined;
  if (o === 255) return p + 4 < b.length ? { len: b.readUInt32BE(p + 1), size: 5 } : undefined;
  return undefined; // partial body length
}

interface Subpacket {
  type: number;
  critical: boolean;
  body: Buffer;
}

function subpackets(b: Buffer): Subpacket[] | undefined {
  const out: Subpacket[] = [];
  let p = 0;
  while (p < b.length) {
    const l = newLength(b, p);
    if (!l || l.len === 0 || p + l.size + l.len > b.length) return undefined;
    const start = p + l.size;
    out.push({
      type: b[start] & 0x7f,
      critical: (b[start] & 0x80) !== 0,
      body: b.subarray(start + 1, start + l.len),
    });
    p = start + l.len;
  }
  return out;
}

/** An MPI at b[p] as its bytes (big-endian), and where the next field starts. */
function mpi(b: Buffer, p: number): { bytes: Buffer; next: number } | undefined {
  if (p + 2 > b.length) return undefined;
  const len = (b.readUInt16BE(p) + 7) >> 3;
  if (p + 2 + len > b.length) return undefined;
  return { bytes: b.subarray(p + 2, p + 2 + len), next: p + 2 + len };
}

interface ParsedSignature {
  hash: string;
  /** version … hashed subpackets: what the trailer counts. */
  hashed: Buffer;
  left16: Buffer;
  signature: Buffer;
  created: Date;
  issuer: Buffer;
  notations: Map<string, string>;
}

function parseSignature(body: Buffer): ParsedSignature | undefined {
  if (body.length < 6 || body[0] !== 4 || body[1] !== 0x00 || body[2] !== enums.publicKey.eddsaLegacy)
    return undefined;
  const hash = HASHES[body[3]];
  if (!hash) return undefined;
  const hashedEnd = 6 + body.readUInt16BE(4);
  if (hashedEnd + 2 > body.length) return undefined;
  const hashedSubs = subpackets(body.subarray(6, hashedEnd));
  const unhashedEnd = hashedEnd + 2 + body.readUInt16BE(hashedEnd);
  if (!hashedSubs || unhashedEnd + 2 > body.length) return undefined;
  const unhashedSubs = subpackets(body.subarray(hashedEnd + 2, unhashedEnd));
  const r = mpi(body, unhashedEnd + 2);
  const s = r && mpi(body, r.next);
  if (!unhashedSubs || !r || !s || s.next !== body.length || r.bytes.length > 32 || s.bytes.length > 32)
    return undefined;
  // Only what dbcrate and gpg write, each as openpgp.js reads it: any other subpacket, even
  // one that is not critical, or a second creation time, goes to openpgp.js.
  let created: Date | undefined;
  let issuer: Buffer | undefined;
  const notations = new Map<string, string>();
  const utf8 = new TextDecoder(); // as openpgp.js decodes notations (a BOM is dropped)
  const setIssuer = (id: Buffer): boolean => {
    if (issuer && !issuer.equals(id)) return false;
    issuer = id;
    return true;
  };
  for (const sp of hashedSubs) {
    if (sp.type === SUB_CREATED) {
      if (created || sp.body.length !== 4) return undefined;
      created = new Date(sp.body.readUInt32BE(0) * 1000);
    } else if (sp.type === SUB_ISSUER_FPR) {
      if (sp.body.length !== 21 || sp.body[0] !== 4 || !setIssuer(sp.body.subarray(13))) return undefined;
    } else if (sp.type === SUB_ISSUER_KEY_ID) {
      if (sp.body.length !== 8 || !setIssuer(sp.body)) return undefined;
    } else if (sp.type === SUB_NOTATION && !sp.critical) {
      if (sp.body.length < 8) return undefined;
      const nl = sp.body.readUInt16BE(4);
      const vl = sp.body.readUInt16BE(6);
      if (8 + nl + vl !== sp.body.length) return undefined;
      notations.set(utf8.decode(sp.body.subarray(8, 8 + nl)), utf8.decode(sp.body.subarray(8 + nl)));
    } else {
      return undefined;
    }
  }
  // The unhashed area may only repeat the issuer (gpg puts its key ID there): openpgp.js
  // reads it last, so another issuer there would change which key it checks against.
  for (const sp of unhashedSubs) {
    const id =
      sp.type === SUB_ISSUER_KEY_ID && sp.body.length === 8
        ? sp.body
        : sp.type === SUB_ISSUER_FPR && sp.body.length === 21 && sp.body[0] === 4
          ? sp.body.subarray(13)
          : undefined;
    if (!id || !issuer || !issuer.equals(id)) return undefined;
  }
  if (!created || !issuer) return undefined;
  const pad = (x: Buffer) => Buffer.concat([Buffer.alloc(32 - x.length), x]);
  return {
    hash,
    hashed: body.subarray(0, hashedEnd),
    left16: body.subarray(unhashedEnd, unhashedEnd + 2),
    signature: Buffer.concat([pad(r.bytes), pad(s.bytes)]),
    created,
    issuer,
    notations,
  };
}

/** The Ed25519 public key of a (sub)key packet, or undefined for other algorithms. */
const publicKeys = new WeakMap<object, KeyObject | null>();
function ed25519Public(packet: object): KeyObject | undefined {
  let k = publicKeys.get(packet);
  if (k === undefined) {
    const p = packet as { algorithm: number; publicParams: { Q?: Uint8Array; oid?: { getName(): string } } };
    const { Q, oid } = p.publicParams;
    k =
      p.algorithm === enums.publicKey.eddsaLegacy &&
      oid?.getName() === enums.curve.ed25519Legacy &&
      Q?.length === 33 &&
      Q[0] === 0x40
        ? createPublicKey({
            key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(Q.subarray(1)).toString('base64url') },
            format: 'jwk',
          })
        : null;
    publicKeys.set(packet, k);
  }
  return k ?? undefined;
}

export interface NativeVerdict {
  data: Buffer;
  /** Primary fingerprint of the trusted signer; undefined when unsigned and allowed. */
  signer?: string;
}

/**
 * Check `inner` (the decrypted packets, MDC already checked). Resolves the literal data when
 * it passes, throws E_UNTRUSTED when it does not, undefined when openpgp.js must decide.
 */
export async function verifyInsideNative(
  inner: Buffer,
  opts: VerifyInsideOptions,
): Promise<NativeVerdict | undefined> {
  const list = packets(inner);
  if (!list) return undefined;
  const tags = list.map((p) => p.tag);
  if (tags.length === 1 && tags[0] === TAG.LITERAL) {
    const data = literalData(list[0].body);
    if (!data) return undefined;
    if (opts.trust.allowUnsigned) return { data };
    throw untrustedError(opts.what, 'it has no signature (archived before signing, or forged)');
  }
  if (tags.join() !== [TAG.ONE_PASS_SIGNATURE, TAG.LITERAL, TAG.SIGNATURE].join()) return undefined;
  const data = literalData(list[1].body);
  const sig = parseSignature(list[2].body);
  if (!data || !sig) return undefined;
  if (opts.trust.trusted.length === 0) {
    if (opts.trust.allowUnsigned) return { data };
    throw untrustedError(opts.what, 'no trusted signer key was given to check its signature');
  }
  // the trusted key holding the issuer, and its signing (sub)key valid when the signature was made
  const keys = await trustedKeyObjects(opts.trust.trusted);
  const hex = sig.issuer.toString('hex');
  let at = -1;
  let issuer: Key | Subkey | undefined;
  for (let i = 0; i < keys.length && !issuer; i++) {
    issuer = [keys[i], ...keys[i].subkeys].find((k) => k.getKeyID().toHex() === hex);
    if (issuer) at = i;
  }
  if (!issuer) throw untrustedError(opts.what, `Could not find signing key with key ID ${hex}`);
  let signing: Key | Subkey;
  try {
    signing = await keys[at].getSigningKey(issuer.getKeyID(), sig.created, undefined, fullConfig(KEY_CONFIG));
  } catch (e) {
    throw untrustedError(opts.what, e instanceof Error ? e.message : String(e));
  }
  const pub = ed25519Public(signing.keyPacket);
  if (!pub) return undefined;
  if (signing.getCreationTime() > sig.created)
    throw untrustedError(opts.what, 'Key is newer than the signature');
  const trailer = Buffer.alloc(6);
  trailer[0] = 4;
  trailer[1] = 0xff;
  trailer.writeUInt32BE(sig.hashed.length, 2);
  const digest = createHash(sig.hash).update(data).update(sig.hashed).update(trailer).digest();
  if (!digest.subarray(0, 2).equals(sig.left16) || !edVerify(null, digest, pub, sig.signature)) {
    throw untrustedError(opts.what, 'Signed digest did not match');
  }
  const wrong = Object.entries(opts.notations ?? {}).find(([k, v]) => sig.notations.get(k) !== v);
  if (wrong) {
    throw untrustedError(
      opts.what,
      `it is signed as ${wrong[0]}="${sig.notations.get(wrong[0]) ?? ''}", not "${wrong[1]}" (a validly signed object stored under another name)`,
    );
  }
  return { data, signer: opts.trust.trusted[at].fingerprint };
}

/** The content of a literal data packet body (format, name, date, then the data). */
function literalData(body: Buffer): Buffer | undefined {
  if (body.length < 2) return undefined;
  const start = 2 + body[1] + 4;
  return start <= body.length ? body.subarray(start) : undefined;
}
