import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { createInflate, createInflateRaw, type Inflate, type InflateRaw } from 'node:zlib';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { CfbDecipher } from './cfb.decipher';
import { PacketReader, TAG, integrity, packetHeader, type PacketSink } from './openpgp-packet.framing';

/** A decrypted session key (openpgp's DecryptedSessionKey shape). */
export interface SessionKey {
  algorithm: string;
  data: Uint8Array;
}

/** The session key from the message's PKESK packets (each with its header). */
export type SessionKeyUnlocker = (pkesks: Buffer[]) => Promise<SessionKey>;

const CFB: Record<string, { name: string; bytes: number }> = {
  aes128: { name: 'aes-128-ecb', bytes: 16 },
  aes192: { name: 'aes-192-ecb', bytes: 24 },
  aes256: { name: 'aes-256-ecb', bytes: 32 },
};
const PREFIX = 18;
/** The MDC packet: 0xD3 0x14 and a SHA-1, the last bytes of the plaintext. */
const MDC = 22;

/** Compressed with an algorithm this implementation does not read (BZip2). */
export class UnsupportedCompressionError extends DbcrateError {
  constructor(readonly algorithm: number) {
    super(
      ErrorCodes.CONFIG,
      `the message is compressed with ${algorithm === 3 ? 'BZip2' : `algorithm ${algorithm}`}, which the native OpenPGP implementation does not read`,
      { hint: 'Decrypt it with DBCRATE_OPENPGP_IMPLEMENTATION=openpgpjs, or with gpg --decrypt.' },
    );
  }
}

function unsupported(what: string): DbcrateError {
  return new DbcrateError(ErrorCodes.CONFIG, `cannot decrypt: ${what}`, {
    hint: 'dbcrate writes SEIPD v1 (CFB + MDC) with AES; decrypt this message with gpg --decrypt or DBCRATE_OPENPGP_IMPLEMENTATION=openpgpjs.',
  });
}

/** Shared state of the inner packet parsers (top level and inside a compressed packet). */
interface InnerContext {
  emit: (b: Buffer) => void;
  literals: number;
  error?: Error;
  /** Set while a decompressor's input buffer is full. */
  drain?: Promise<void>;
  inflaters: Promise<void>[];
}

const skip: PacketSink = { data: () => undefined, end: () => undefined };

/** The literal data packet: a header (format, file name, date), then the data. */
class LiteralSink implements PacketSink {
  private head: Buffer[] = [];
  private headLen = 0;
  private need = 2;

  constructor(private readonly ctx: InnerContext) {}

  data(b: Buffer): void {
    let p = 0;
    while (this.headLen < this.need && p < b.length) {
      const take = Math.min(this.need - this.headLen, b.length - p);
      this.head.push(b.subarray(p, p + take));
      this.headLen += take;
      p += take;
      if (this.headLen === 2 && this.need === 2) this.need = 6 + Buffer.concat(this.head)[1];
    }
    if (p < b.length) this.ctx.emit(p === 0 ? b : b.subarray(p));
  }

  end(): void {
    if (this.headLen < this.need) throw integrity('the literal data packet header is cut short');
  }
}

/** A compressed data packet: an algorithm octet, then a deflate/zlib stream of packets. */
class CompressedSink implements PacketSink {
  private nested?: InnerPackets;
  private inflater?: Inflate | InflateRaw;
  private algorithm = -1;

  constructor(private readonly ctx: InnerContext) {}

  data(b: Buffer): void {
    if (this.algorithm < 0) {
      this.algorithm = b[0];
      this.start();
      b = b.subarray(1);
      if (b.length === 0) return;
    }
    if (!this.inflater) {
      this.nested!.feed(b);
      return;
    }
    if (!this.inflater.write(b) && !this.ctx.drain) {
      // 'close' too: a decompressor that failed never drains
      this.ctx.drain = new Promise((resolve) => {
        this.inflater!.once('drain', resolve);
        this.inflater!.once('close', resolve);
      });
    }
  }

  end(): void {
    if (this.algorithm < 0) throw integrity('the compressed data packet is empty');
    if (!this.inflater) this.nested!.finish();
    else this.inflater.end();
  }

  private start(): void {
    this.nested = new InnerPackets(this.ctx, false);
    if (this.algorithm === 0) return;
    if (this.algorithm !== 1 && this.algorithm !== 2) throw new UnsupportedCompressionError(this.algorithm);
    const inflater = this.algorithm === 1 ? createInflateRaw() : createInflate();
    this.inflater = inflater;
    const nested = this.nested;
    this.ctx.inflaters.push(
      new Promise<void>((resolve) => {
        const fail = (e: unknown): void => {
          this.ctx.error ??=
            e instanceof DbcrateError
              ? e
              : integrity(`the compressed data is corrupt: ${(e as Error).message}`);
          inflater.destroy();
          resolve();
        };
        inflater.on('data', (d: Buffer) => {
          try {
            nested.feed(d);
          } catch (e) {
            fail(e);
          }
        });
        inflater.once('error', fail);
        inflater.once('end', () => {
          try {
            nested.finish();
          } catch (e) {
            fail(e);
          }
          resolve();
        });
      }),
    );
  }
}

/** The packets inside the encryption: one literal, maybe compressed, maybe signed. */
class InnerPackets {
  private readonly reader: PacketReader;

  constructor(
    private readonly ctx: InnerContext,
    topLevel: boolean,
  ) {
    this.reader = new PacketReader((tag) => this.open(tag, topLevel), 'the encrypted data');
  }

  feed(b: Buffer): void {
    this.reader.feed(b);
  }

  finish(): void {
    this.reader.finish();
  }

  private open(tag: number, topLevel: boolean): PacketSink {
    switch (tag) {
      case TAG.LITERAL:
        if (++this.ctx.literals > 1) throw integrity('more than one literal data packet');
        return new LiteralSink(this.ctx);
      case TAG.COMPRESSED:
        if (!topLevel) throw integrity('a compressed packet inside a compressed packet');
        return new CompressedSink(this.ctx);
      case TAG.ONE_PASS_SIGNATURE:
      case TAG.SIGNATURE:
      case TAG.MARKER:
      case TAG.PADDING:
        // signatures are checked by decryptBuffer (verify), ignored in streams
        return skip;
      default:
        throw integrity(`unexpected packet (tag ${tag}) inside the encrypted data`);
    }
  }
}

export interface NativeDecryptOptions {
  /** Emit the inner packets as they are (for signature checks) instead of the literal data. */
  rawInner?: boolean;
}

/**
 * Decrypts an OpenPGP message (PKESK…, SEIPD v1) as a Node Transform: AES-CFB and SHA-1
 * in node:crypto, the session key from `unlock` (openpgp.js). Plaintext is released as
 * it is decrypted; the stream errors (E_INTEGRITY) at its end unless the MDC, the
 * prefix check and the packet structure all check out.
 */
export class NativeDecryptStream extends Transform {
  private readonly outer: PacketReader;
  private readonly pkesks: Buffer[] = [];
  private pkeskBody: Buffer[] = [];
  private seipdSeen = false;
  private seipdEnded = false;
  private versionRead = false;
  private keyPromise?: Promise<SessionKey>;
  private decipher?: CfbDecipher;
  private queued: Buffer[] = [];
  private readonly hash: Hash = createHash('sha1');
  private tail = Buffer.alloc(0);
  private prefix = Buffer.alloc(0);
  private readonly ctx: InnerContext;
  private readonly inner?: InnerPackets;

  constructor(
    private readonly unlock: SessionKeyUnlocker,
    opts: NativeDecryptOptions = {},
  ) {
    super({ readableHighWaterMark: 1024 * 1024, writableHighWaterMark: 1024 * 1024 });
    this.ctx = { emit: (b) => this.push(b), literals: 0, inflaters: [] };
    if (!opts.rawInner) this.inner = new InnerPackets(this.ctx, true);
    this.outer = new PacketReader((tag) => this.openOuter(tag), 'the message');
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.outer.feed(chunk);
      this.check();
    } catch (e) {
      cb(e as Error);
      return;
    }
    if ((this.keyPromise && !this.decipher) || this.ctx.drain) this.continueAfter(cb);
    else cb();
  }

  override _flush(cb: TransformCallback): void {
    void (async () => {
      this.outer.finish();
      if (!this.seipdSeen) throw integrity('no encrypted data packet (truncated?)');
      if (this.keyPromise && !this.decipher) await this.waitKey();
      if (!this.seipdEnded) throw integrity('the encrypted data packet is cut short');
      this.checkMdc();
      this.inner?.finish();
      await Promise.all(this.ctx.inflaters);
      this.check();
      if (this.inner && this.ctx.literals !== 1) throw integrity('no literal data packet');
    })().then(
      () => cb(),
      (e: unknown) => cb(e as Error),
    );
  }

  private continueAfter(cb: TransformCallback): void {
    void (async () => {
      if (this.keyPromise && !this.decipher) await this.waitKey();
      while (this.ctx.drain) {
        const d = this.ctx.drain;
        await d;
        if (this.ctx.drain === d) this.ctx.drain = undefined;
      }
      this.check();
    })().then(
      () => cb(),
      (e: unknown) => cb(e as Error),
    );
  }

  private check(): void {
    if (this.ctx.error) throw this.ctx.error;
  }

  private async waitKey(): Promise<void> {
    const sk = await this.keyPromise!;
    const algo = CFB[sk.algorithm];
    if (!algo) throw unsupported(`the session key is for ${sk.algorithm}; only AES is read natively`);
    if (sk.data.length !== algo.bytes) throw integrity('the session key has the wrong length');
    this.decipher = new CfbDecipher(algo.name, sk.data, Buffer.alloc(16));
    const queued = this.queued;
    this.queued = [];
    for (const b of queued) this.decrypt(b);
  }

  private openOuter(tag: number): PacketSink {
    if (this.seipdSeen) throw integrity('trailing data after the encrypted data packet');
    switch (tag) {
      case TAG.PKESK:
        return {
          data: (b) => this.pkeskBody.push(Buffer.from(b)),
          end: () => {
            const body = Buffer.concat(this.pkeskBody);
            this.pkeskBody = [];
            this.pkesks.push(Buffer.concat([packetHeader(TAG.PKESK, body.length), body]));
          },
        };
      case TAG.SKESK:
      case TAG.MARKER:
      case TAG.PADDING:
        return skip;
      case TAG.SEIPD:
        this.seipdSeen = true;
        this.keyPromise = this.unlock(this.pkesks);
        this.keyPromise.catch(() => undefined); // awaited in _transform/_flush
        return { data: (b) => this.seipdData(b), end: () => (this.seipdEnded = true) };
      case TAG.SED:
        throw unsupported(
          'it is symmetrically encrypted without integrity protection (SED, no MDC), which is refused',
        );
      case TAG.AEAD:
        throw unsupported('it uses the AEAD encrypted data packet (tag 20), which is not supported');
      default:
        throw integrity(`unexpected packet (tag ${tag}) before the encrypted data`);
    }
  }

  private seipdData(b: Buffer): void {
    if (!this.versionRead) {
      this.versionRead = true;
      if (b[0] === 2)
        throw unsupported('it is SEIPD v2 (AEAD, RFC 9580), which the native implementation does not read');
      if (b[0] !== 1) throw integrity(`unknown encrypted data packet version ${b[0]}`);
      b = b.subarray(1);
      if (b.length === 0) return;
    }
    if (this.decipher) this.decrypt(b);
    else this.queued.push(Buffer.from(b));
  }

  private decrypt(ct: Buffer): void {
    const pt = this.decipher!.update(ct);
    if (pt.length >= MDC) {
      if (this.tail.length) this.release(this.tail);
      this.release(pt.subarray(0, pt.length - MDC));
      this.tail = Buffer.from(pt.subarray(pt.length - MDC));
    } else {
      const all = Buffer.concat([this.tail, pt]);
      const cut = Math.max(0, all.length - MDC);
      if (cut > 0) this.release(all.subarray(0, cut));
      this.tail = all.subarray(cut);
    }
  }

  private release(b: Buffer): void {
    if (b.length === 0) return;
    this.hash.update(b);
    if (this.prefix.length < PREFIX) {
      const take = Math.min(PREFIX - this.prefix.length, b.length);
      this.prefix = Buffer.concat([this.prefix, b.subarray(0, take)]);
      b = b.subarray(take);
      if (this.prefix.length === PREFIX && this.prefix.readUInt16BE(14) !== this.prefix.readUInt16BE(16)) {
        throw integrity('the session key or the encrypted data is wrong (prefix check failed)');
      }
      if (b.length === 0) return;
    }
    if (this.inner) this.inner.feed(b);
    else this.push(b);
  }

  private checkMdc(): void {
    if (this.decipher) this.decipher.final();
    if (this.prefix.length < PREFIX || this.tail.length < MDC)
      throw integrity('the encrypted data is too short');
    if (this.tail[0] !== 0xd3 || this.tail[1] !== 0x14) throw integrity('no modification detection code');
    this.hash.update(this.tail.subarray(0, 2));
    if (!this.hash.digest().equals(this.tail.subarray(2))) {
      throw integrity('modification detection code mismatch');
    }
  }
}
