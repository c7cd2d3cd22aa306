import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/**
 * Walks the frame/block structure of a zstd stream (RFC 8878) without decompressing it:
 * frame headers, 3-byte block headers (whose sizes say how far to skip), checksums and
 * skippable frames. Cost is per block, not per byte.
 *
 * Why: it lets both decoders fail early and alike on input that is not zstd, and tell
 * a truncated stream (it ended inside a frame) from a complete one — the WebAssembly
 * decoder cannot tell on its own.
 */
const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MAGIC_MIN = 0x184d2a50;
const SKIPPABLE_MAGIC_MAX = 0x184d2a5f;
const BLOCK_SIZE_MAX = 128 * 1024;

enum State {
  Magic,
  FrameHeaderDescriptor,
  FrameHeaderRest,
  BlockHeader,
  BlockBody,
  Checksum,
  SkippableSize,
  SkippableBody,
}

export class ZstdFrameScanner {
  /** Complete frames seen so far (zstd and skippable). */
  frames = 0;
  /** Bytes scanned so far. */
  offset = 0;

  private state = State.Magic;
  /** Bytes of the fixed-size field being collected (magic, header, block header...). */
  private readonly field = Buffer.alloc(16);
  private fieldLength = 0;
  private need = 4;
  /** Bytes still to skip in a block body or skippable frame. */
  private skip = 0;
  private lastBlock = false;
  private hasChecksum = false;

  /** Scan the next chunk; throws E_CODEC as soon as the structure is not zstd. */
  update(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === State.BlockBody || this.state === State.SkippableBody) {
        const n = Math.min(this.skip, chunk.length - i);
        this.skip -= n;
        i += n;
        this.offset += n;
        if (this.skip === 0) this.afterBody();
        continue;
      }
      const n = Math.min(this.need - this.fieldLength, chunk.length - i);
      this.field.set(chunk.subarray(i, i + n), this.fieldLength);
      this.fieldLength += n;
      i += n;
      this.offset += n;
      if (this.fieldLength === this.need) this.onField();
    }
  }

  /** Call at end of input: throws E_INTEGRITY when the input stopped inside a frame. */
  finish(): void {
    if (this.state === State.Magic && this.fieldLength === 0) {
      if (this.frames > 0) return;
      throw new DbcrateError(ErrorCodes.INTEGRITY, 'zstd input is empty: expected at least one zstd frame', {
        hint: 'The object is empty or was cut off before any data was written.',
      });
    }
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      `zstd input is truncated: it ends inside frame ${this.frames + 1} after ${this.offset} bytes`,
      { hint: 'The compressed object is incomplete (interrupted upload or download?).' },
    );
  }

  private expect(state: State, need: number): void {
    this.state = state;
    this.need = need;
    this.fieldLength = 0;
  }

  private corrupt(what: string): never {
    throw new DbcrateError(ErrorCodes.INTEGRITY, `zstd data is corrupt: ${what} (byte ${this.offset})`, {
      hint: 'The object is damaged, or it is not zstd-compressed data.',
    });
  }

  private onField(): void {
    const f = this.field;
    switch (this.state) {
      case State.Magic: {
        const magic = f.readUInt32LE(0);
        if (magic === ZSTD_MAGIC) return this.expect(State.FrameHeaderDescriptor, 1);
        if (magic >= SKIPPABLE_MAGIC_MIN && magic <= SKIPPABLE_MAGIC_MAX)
          return this.expect(State.SkippableSize, 4);
        return this.corrupt(
          `unknown frame magic 0x${magic.toString(16).padStart(8, '0')}` +
            (this.frames === 0 ? ', the input is not zstd data' : ' after the last complete frame'),
        );
      }
      case State.FrameHeaderDescriptor: {
        const fhd = f[0];
        if (fhd & 0x08) this.corrupt('reserved bit set in frame header');
        const fcsFlag = fhd >> 6;
        const singleSegment = (fhd >> 5) & 1;
        this.hasChecksum = ((fhd >> 2) & 1) === 1;
        const dictIdSize = [0, 1, 2, 4][fhd & 3];
        const fcsSize = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag];
        const rest = (singleSegment ? 0 : 1) + dictIdSize + fcsSize;
        if (rest === 0) return this.expect(State.BlockHeader, 3);
        return this.expect(State.FrameHeaderRest, rest);
      }
      case State.FrameHeaderRest:
        return this.expect(State.BlockHeader, 3);
      case State.BlockHeader: {
        const h = f[0] | (f[1] << 8) | (f[2] << 16);
        this.lastBlock = (h & 1) === 1;
        const type = (h >> 1) & 3;
        const size = h >>> 3;
        if (type === 3) this.corrupt('reserved block type');
        if (size > BLOCK_SIZE_MAX) this.corrupt(`block size ${size} exceeds the 128 KiB maximum`);
        // Raw: `size` bytes; RLE: one byte repeated `size` times; compressed: `size` bytes.
        this.skip = type === 1 ? 1 : size;
        this.state = State.BlockBody;
        this.fieldLength = 0;
        if (this.skip === 0) this.afterBody();
        return;
      }
      case State.Checksum:
        return this.endFrame();
      case State.SkippableSize:
        this.skip = f.readUInt32LE(0);
        this.state = State.SkippableBody;
        this.fieldLength = 0;
        if (this.skip === 0) this.endFrame();
        return;
      default:
        return;
    }
  }

  private afterBody(): void {
    if (this.state === State.SkippableBody) return this.endFrame();
    if (!this.lastBlock) return this.expect(State.BlockHeader, 3);
    if (this.hasChecksum) return this.expect(State.Checksum, 4);
    this.endFrame();
  }

  private endFrame(): void {
    this.frames += 1;
    this.expect(State.Magic, 4);
  }
}
