import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/** Key ID a PKESK packet uses for "any recipient" (gpg --throw-keyids, openpgp `wildcard`). */
export const WILDCARD_KEY_ID = '0000000000000000';

const TAG_PKESK = 1;
const TAG_SKESK = 3;
const TAG_MARKER = 10;
/** Headers of real messages are a few hundred bytes per recipient; stop looking after this. */
const HEADER_LIMIT = 64 * 1024;

/**
 * The recipients an OpenPGP message names, read from its leading packets (RFC 9580
 * §5.1 PKESK v3: 8-byte key ID; v6: fingerprint) without any key: upper-case hex, the
 * 16-digit key ID of the encryption subkey for v3 (the usual, GnuPG-compatible case).
 *
 * Accepts the first bytes of an object (a ranged GET of a few KiB is plenty) or a
 * stream; a stream is read only as far as needed and then released.
 */
export async function recipientKeyIds(input: Uint8Array | AsyncIterable<Uint8Array>): Promise<string[]> {
  if (input instanceof Uint8Array) {
    const r = parseHeader(input, true);
    return r.ids;
  }
  let buf = new Uint8Array(0);
  for await (const chunk of input) {
    const next = new Uint8Array(buf.length + chunk.length);
    next.set(buf);
    next.set(chunk, buf.length);
    buf = next;
    const r = parseHeader(buf, false);
    if (r.complete) return r.ids; // leaving the loop releases (destroys) the stream
    if (buf.length > HEADER_LIMIT) break;
  }
  return parseHeader(buf, true).ids;
}

interface HeaderResult {
  ids: string[];
  /** True once a packet other than PKESK/SKESK/marker starts: no more recipients follow. */
  complete: boolean;
}

function notPgp(what: string): DbcrateError {
  return new DbcrateError(ErrorCodes.INTEGRITY, `not an OpenPGP encrypted message: ${what}`, {
    hint: 'The object is damaged, or it was not written by dbcrate / gpg --encrypt.',
  });
}

/** Parse leading packets. `final`: the buffer is all there is (else stop quietly at its end). */
function parseHeader(b: Uint8Array, final: boolean): HeaderResult {
  const ids: string[] = [];
  let p = 0;
  while (p < b.length) {
    const first = b[p];
    if ((first & 0x80) === 0) throw notPgp(`byte ${p} is not a packet header`);
    let tag: number;
    let len: number;
    let hdr: number;
    if (first & 0x40) {
      tag = first & 0x3f;
      if (p + 2 > b.length) break;
      const o1 = b[p + 1];
      if (o1 < 192) {
        len = o1;
        hdr = 2;
      } else if (o1 < 224) {
        if (p + 3 > b.length) break;
        len = ((o1 - 192) << 8) + b[p + 2] + 192;
        hdr = 3;
      } else if (o1 === 255) {
        if (p + 6 > b.length) break;
        len = ((b[p + 2] << 24) | (b[p + 3] << 16) | (b[p + 4] << 8) | b[p + 5]) >>> 0;
        hdr = 6;
      } else {
        // Partial body length: only data packets use it, so the header is over.
        return { ids, complete: true };
      }
    } else {
      tag = (first >> 2) & 0x0f;
      const lt = first & 3;
      if (lt === 3) return { ids, complete: true }; // indeterminate length: a data packet
      hdr = 1 + (1 << lt);
      if (p + hdr > b.length) break;
      len = 0;
      for (let i = 1; i < hdr; i++) len = len * 256 + b[p + i];
    }
    if (tag !== TAG_PKESK && tag !== TAG_SKESK && tag !== TAG_MARKER) return { ids, complete: true };
    if (p + hdr + len > b.length) break;
    if (tag === TAG_PKESK) ids.push(pkeskRecipient(b.subarray(p + hdr, p + hdr + len)));
    p += hdr + len;
  }
  if (final && ids.length === 0) throw notPgp(b.length === 0 ? 'it is empty' : 'no recipient packets found');
  return { ids, complete: false };
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex').toUpperCase();
}

/** @internal the key ID a PKESK body names. */
export function pkeskRecipient(body: Uint8Array): string {
  const version = body[0];
  if (version === 3) return hex(body.subarray(1, 9));
  if (version === 6) {
    const n = body[1];
    return n === 0 ? WILDCARD_KEY_ID : hex(body.subarray(3, 2 + n));
  }
  throw notPgp(`unknown PKESK version ${version}`);
}
