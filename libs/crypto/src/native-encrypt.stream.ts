import { createCipheriv, createHash, randomBytes, type Cipher as NodeCipher, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PartialFramer, TAG, packetHeader } from './openpgp-packet.framing';

/** Partial body chunks of 1 MiB, for the SEIPD packet and the literal packet inside it. */
const CHUNK_LOG2 = 20;
const ZERO_IV = Buffer.alloc(16);
/** Literal data header: format 'b', no file name, date 0. */
const LITERAL_HEAD = Buffer.from([0x62, 0, 0, 0, 0, 0]);
const MDC_HEAD = Buffer.from([0xd3, 0x14]);

/** 16 random bytes and the last two repeated: what SEIPD v1 encrypts first. */
function prefix(): Buffer {
  const p = randomBytes(18);
  p[16] = p[14];
  p[17] = p[15];
  return p;
}

/** Large inputs are encrypted this much at a time: each slice is hashed and encrypted while in cache. */
const SLICE = 64 * 1024;

/** AES-256-CFB (zero IV) + SHA-1 over the plaintext, as SEIPD v1 wants. */
class Seipd {
  readonly hash: Hash = createHash('sha1');
  private readonly cipher: NodeCipher;

  constructor(
    sessionKey: Buffer,
    private readonly out: (ct: Buffer) => void,
  ) {
    this.cipher = createCipheriv('aes-256-cfb', sessionKey, ZERO_IV);
    this.write(prefix());
  }

  /** `tap` sees each slice of `pt` just before it is encrypted (a signature's hash). */
  write(pt: Buffer, tap?: (slice: Buffer) => void): void {
    if (pt.length > SLICE) {
      for (let at = 0; at < pt.length; at += SLICE) this.write(pt.subarray(at, at + SLICE), tap);
      return;
    }
    tap?.(pt);
    this.hash.update(pt);
    this.out(this.cipher.update(pt));
  }

  /** The MDC packet, hashed up to its own header. */
  end(): void {
    this.write(MDC_HEAD);
    this.out(this.cipher.update(this.hash.digest()));
    this.cipher.final();
  }
}

export type SeipdWrite = (pt: Buffer, tap?: (slice: Buffer) => void) => void;

/**
 * A whole message at once: PKESKs, then SEIPD with a definite length around the packets
 * that `inner` writes, in one buffer.
 */
export function sealBuffer(pkesks: Buffer, sessionKey: Buffer, inner: (write: SeipdWrite) => void): Buffer {
  const ct: Buffer[] = [];
  let bytes = 0;
  const seipd = new Seipd(sessionKey, (b) => {
    ct.push(b);
    bytes += b.length;
  });
  inner((pt, tap) => seipd.write(pt, tap));
  seipd.end();
  const head = Buffer.concat([pkesks, packetHeader(TAG.SEIPD, 1 + bytes), Buffer.from([1])]);
  return Buffer.concat([head, ...ct], head.length + bytes);
}

/** The header of a literal data packet of `length` bytes (definite length). */
export function literalHeader(length: number): Buffer {
  return Buffer.concat([packetHeader(TAG.LITERAL, LITERAL_HEAD.length + length), LITERAL_HEAD]);
}

/**
 * Encrypts by calls: PKESKs, then SEIPD v1 (partial lengths) around one literal data packet
 * (partial lengths), then the MDC. `push` may keep slices of its input until a later call
 * (the framer holds them, not copies), so its input must not be reused by the caller.
 * Ciphertext goes out as the cipher made it; only small pieces are joined.
 */
export class SeipdSession {
  private out: Buffer[] = [];
  private readonly seipd: Seipd;
  private readonly outer: PartialFramer;
  private readonly literal: PartialFramer;

  constructor(pkesks: Buffer, sessionKey: Buffer) {
    this.out.push(pkesks, Buffer.from([0xc0 | TAG.SEIPD]));
    this.outer = new PartialFramer(CHUNK_LOG2, (b) => this.out.push(b));
    this.outer.write(Buffer.from([1]));
    this.seipd = new Seipd(sessionKey, (ct) => this.outer.write(ct));
    this.seipd.write(Buffer.from([0xc0 | TAG.LITERAL]));
    this.literal = new PartialFramer(CHUNK_LOG2, (b) => this.seipd.write(b));
    this.literal.write(LITERAL_HEAD);
  }

  push(chunk: Buffer): Buffer[] {
    this.literal.write(chunk);
    return this.take();
  }

  end(): Buffer[] {
    this.literal.end();
    this.seipd.end();
    this.outer.end();
    return this.take();
  }

  private take(): Buffer[] {
    const ready: Buffer[] = [];
    let small: Buffer[] = [];
    const joinSmall = (): void => {
      if (small.length) ready.push(small.length === 1 ? small[0] : Buffer.concat(small));
      small = [];
    };
    for (const b of this.out) {
      if (b.length < 16 * 1024) small.push(b);
      else {
        joinSmall();
        ready.push(b);
      }
    }
    joinSmall();
    this.out = [];
    return ready;
  }
}

/** SeipdSession as a stream stage. */
export class NativeEncryptStream extends Transform {
  private session?: SeipdSession;

  constructor(private readonly header: Promise<{ pkesks: Buffer; sessionKey: Buffer }>) {
    super({ readableHighWaterMark: 1024 * 1024, writableHighWaterMark: 1024 * 1024 });
    header.catch(() => undefined); // awaited in the first _transform/_flush
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (!this.session) {
      this.start().then(
        () => this._transform(chunk, _enc, cb),
        (e: unknown) => cb(e as Error),
      );
      return;
    }
    for (const b of this.session.push(chunk)) this.push(b);
    cb();
  }

  override _flush(cb: TransformCallback): void {
    const finish = (): void => {
      for (const b of this.session!.end()) this.push(b);
      cb();
    };
    if (this.session) finish();
    else this.start().then(finish, (e: unknown) => cb(e as Error));
  }

  private async start(): Promise<void> {
    const { pkesks, sessionKey } = await this.header;
    this.session ??= new SeipdSession(pkesks, sessionKey);
  }
}
