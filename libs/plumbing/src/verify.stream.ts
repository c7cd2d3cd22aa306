import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/** Bytes held back until the whole object is verified. */
export const VERIFY_HOLD_BYTES = 1 << 20;

/**
 * Passes bytes through and, before it lets the end of the stream through, checks size and
 * sha256 against the manifest. It holds back the last VERIFY_HOLD_BYTES until then: an
 * object swapped in the bucket between the listing's check and the restore would otherwise
 * reach pg_restore whole, which may commit before it sees the end of input. Downstream
 * (decryption, decompression, pg_restore) so never gets the tail of an object that differs
 * from what was backed up.
 */
export class VerifyStream extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');
  private readonly held: Buffer[] = [];
  private heldBytes = 0;

  constructor(
    private readonly expected: { sha256: string; size: number; key: string },
    private readonly onBytes?: (n: number) => void,
    private readonly hold = VERIFY_HOLD_BYTES,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.expected.size) {
      cb(this.mismatch(`is larger than the ${this.expected.size} bytes recorded in its manifest`));
      return;
    }
    this.hash.update(chunk);
    this.onBytes?.(this.bytes);
    this.held.push(chunk);
    this.heldBytes += chunk.length;
    while (this.held.length > 1 && this.heldBytes - this.held[0].length >= this.hold) {
      const out = this.held.shift()!;
      this.heldBytes -= out.length;
      this.push(out);
    }
    cb();
  }

  override _flush(cb: TransformCallback): void {
    if (this.bytes !== this.expected.size) {
      cb(this.mismatch(`has ${this.bytes} bytes, its manifest records ${this.expected.size} (truncated?)`));
      return;
    }
    const got = this.hash.digest('hex');
    if (got !== this.expected.sha256) {
      cb(this.mismatch(`has sha256 ${got}, its manifest records ${this.expected.sha256}`));
      return;
    }
    for (const c of this.held.splice(0)) this.push(c);
    cb();
  }

  private mismatch(what: string): DbcrateError {
    return new DbcrateError(ErrorCodes.INTEGRITY, `stored object ${this.expected.key} ${what}`, {
      hint: 'the stored object is damaged or was changed after the backup; restore another snapshot',
    });
  }
}
