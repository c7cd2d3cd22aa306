import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/**
 * Passes bytes through and, before it lets the end of the stream through, checks size and
 * sha256 against the manifest. A consumer downstream (pg_restore) therefore never sees a
 * clean end of input for an object that differs from what was backed up.
 */
export class VerifyStream extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');

  constructor(
    private readonly expected: { sha256: string; size: number; key: string },
    private readonly onBytes?: (n: number) => void,
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
    cb(null, chunk);
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
    cb();
  }

  private mismatch(what: string): DbcrateError {
    return new DbcrateError(ErrorCodes.INTEGRITY, `stored object ${this.expected.key} ${what}`, {
      hint: 'the stored object is damaged or was changed after the backup; restore another snapshot',
    });
  }
}
