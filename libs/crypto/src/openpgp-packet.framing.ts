import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/**
 * OpenPGP packet framing (RFC 9580 §4.2) for the native cipher: headers written with
 * definite or partial body lengths, and an incremental reader of packet sequences.
 */

export const TAG = {
  PKESK: 1,
  SIGNATURE: 2,
  SKESK: 3,
  ONE_PASS_SIGNATURE: 4,
  COMPRESSED: 8,
  SED: 9,
  MARKER: 10,
  LITERAL: 11,
  SEIPD: 18,
  MDC: 19,
  AEAD: 20,
  PADDING: 21,
} as const;

export function integrity(what: string): DbcrateError {
  return new DbcrateError(
    ErrorCodes.INTEGRITY,
    `cannot decrypt: it is damaged, was tampered with, or is truncated (${what})`,
    {
      hint: 'Check the object against its manifest sha256; restore from another snapshot if it is corrupt.',
    },
  );
}

/** A new-format definite length (1, 2 or 5 octets). */
export function definiteLength(len: number): Buffer {
  if (len < 192) return Buffer.from([len]);
  if (len < 8384) {
    const l = len - 192;
    return Buffer.from([(l >> 8) + 192, l & 0xff]);
  }
  const b = Buffer.alloc(5);
  b[0] = 255;
  b.writeUInt32BE(len, 1);
  return b;
}

/** A new-format packet header with a definite body length. */
export function packetHeader(tag: number, len: number): Buffer {
  return Buffer.concat([Buffer.from([0xc0 | tag]), definiteLength(len)]);
}

/**
 * Cuts a byte stream into partial body chunks of 2^log2 bytes (each preceded by its
 * length octet), the last one with a definite length. Data is held (as slices, not
 * copied) until more than one chunk is pending, so the last chunk is never empty
 * unless the whole body is.
 */
export class PartialFramer {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly chunk: number;
  private readonly lengthOctet: Buffer;

  constructor(
    log2: number,
    private readonly out: (piece: Buffer) => void,
  ) {
    if (log2 < 9 || log2 > 30) throw new Error('partial chunk size must be 2^9 .. 2^30');
    this.chunk = 2 ** log2;
    this.lengthOctet = Buffer.from([224 + log2]);
  }

  write(b: Buffer): void {
    if (b.length === 0) return;
    this.pending.push(b);
    this.pendingBytes += b.length;
    while (this.pendingBytes > this.chunk) this.emit(this.chunk, this.lengthOctet);
  }

  end(): void {
    this.emit(this.pendingBytes, definiteLength(this.pendingBytes));
  }

  private emit(n: number, header: Buffer): void {
    this.out(header);
    let left = n;
    while (left > 0) {
      const b = this.pending[0];
      if (b.length <= left) {
        this.out(b);
        this.pending.shift();
        left -= b.length;
      } else {
        this.out(b.subarray(0, left));
        this.pending[0] = b.subarray(left);
        left = 0;
      }
    }
    this.pendingBytes -= n;
  }
}

function lengthSize(o1: number): number {
  if (o1 < 192) return 1;
  if (o1 < 224) return 2;
  return o1 === 255 ? 5 : 1;
}

/** What the reader hands each packet's body to. */
export interface PacketSink {
  data(b: Buffer): void;
  end(): void;
}

/**
 * Reads a sequence of packets from bytes fed in any slicing. `open` is called with each
 * packet's tag and returns where its body goes (in slices of the input, not copied).
 * Both header formats; old-format indeterminate length runs to the end of input.
 */
export class PacketReader {
  private hdr = Buffer.alloc(0);
  /** Bytes left in the current body chunk; -1 between packets. */
  private remaining = -1;
  private partial = false;
  private indeterminate = false;
  private sink?: PacketSink;
  private inBody = false;

  constructor(
    private readonly open: (tag: number) => PacketSink,
    private readonly what: string,
  ) {}

  /** True when input so far ends exactly at a packet boundary. */
  get atBoundary(): boolean {
    return !this.inBody && this.hdr.length === 0;
  }

  feed(b: Buffer): void {
    let p = 0;
    while (p < b.length) {
      if (this.inBody && this.indeterminate) {
        this.sink!.data(p === 0 ? b : b.subarray(p));
        return;
      }
      if (this.inBody && this.remaining > 0) {
        const n = Math.min(this.remaining, b.length - p);
        this.sink!.data(b.subarray(p, p + n));
        this.remaining -= n;
        p += n;
        if (this.remaining === 0 && !this.partial) this.close();
        continue;
      }
      // a header (packet header, or the length of the next partial chunk): at most 6 bytes
      if (this.hdr.length === 0) {
        const need = this.headerSize(b, p);
        if (need === 0 || p + need > b.length) {
          this.hdr = Buffer.from(b.subarray(p));
          return;
        }
        this.parseHeader(b, p);
        p += need;
        continue;
      }
      const had = this.hdr.length;
      const h = Buffer.concat([this.hdr, b.subarray(p, p + 6 - had)]);
      const need = this.headerSize(h, 0);
      if (need === 0 || need > h.length) {
        this.hdr = h;
        return; // b was shorter than what the header still needs
      }
      this.hdr = Buffer.alloc(0);
      this.parseHeader(h, 0);
      p += need - had;
    }
  }

  /** End of input: a packet cut short is truncation. */
  finish(): void {
    if (this.inBody && this.indeterminate) {
      this.close();
      return;
    }
    if (!this.atBoundary) throw integrity(`${this.what} ends in the middle of a packet (truncated)`);
  }

  /** Header size at b[p], or 0 when b does not hold enough to tell. */
  private headerSize(b: Buffer, p: number): number {
    if (this.inBody) return p < b.length ? lengthSize(b[p]) : 0;
    if (p >= b.length) return 0;
    const first = b[p];
    if ((first & 0x80) === 0)
      throw integrity(`${this.what}: byte 0x${first.toString(16)} is not a packet header`);
    if (first & 0x40) return p + 1 < b.length ? 1 + lengthSize(b[p + 1]) : 0;
    const lt = first & 3;
    return lt === 3 ? 1 : 1 + (1 << lt);
  }

  private parseHeader(b: Buffer, p: number): void {
    if (this.inBody) {
      this.parseLength(b, p);
      return;
    }
    const first = b[p];
    let tag: number;
    if (first & 0x40) {
      tag = first & 0x3f;
      this.sink = this.open(tag);
      this.inBody = true;
      this.parseLength(b, p + 1);
    } else {
      tag = (first >> 2) & 0x0f;
      const lt = first & 3;
      this.sink = this.open(tag);
      this.inBody = true;
      this.partial = false;
      this.indeterminate = lt === 3;
      if (lt === 3) return;
      let len = 0;
      for (let i = 1; i <= 1 << lt; i++) len = len * 256 + b[p + i];
      this.setLength(len);
    }
  }

  private parseLength(b: Buffer, p: number): void {
    const o1 = b[p];
    this.partial = false;
    if (o1 < 192) this.setLength(o1);
    else if (o1 < 224) this.setLength(((o1 - 192) << 8) + b[p + 1] + 192);
    else if (o1 === 255) this.setLength(b.readUInt32BE(p + 1));
    else {
      this.partial = true;
      this.setLength(2 ** (o1 & 0x1f));
    }
  }

  private setLength(len: number): void {
    this.remaining = len;
    if (len === 0 && !this.partial) this.close();
  }

  private close(): void {
    const sink = this.sink!;
    this.inBody = false;
    this.remaining = -1;
    this.partial = false;
    this.indeterminate = false;
    this.sink = undefined;
    sink.end();
  }
}
