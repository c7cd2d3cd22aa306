import { Duplex } from 'node:stream';

/** Bytes queued between our writable side and the web stream the transform reads. */
const INPUT_QUEUE_BYTES = 1024 * 1024;
/** Bytes the readable side buffers before it stops pulling from the transform. */
const OUTPUT_HIGH_WATER = 256 * 1024;

/**
 * A Node Duplex around a function from a web ReadableStream to a (promised) web
 * ReadableStream — the shape of openpgp v6's streaming API, which takes no Node streams.
 *
 * Written by hand rather than Readable.toWeb/fromWeb + PassThrough: one hop fewer per
 * chunk, byte-counted backpressure in both directions (the write callback waits for the
 * web stream to pull; the web stream is read only while Node wants data), and one place
 * where errors from either side become the Duplex's error (mapped by `mapError`) and
 * cancel the other side, so nothing hangs.
 */
export class WebStreamDuplex extends Duplex {
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  private pendingWrite?: (err?: Error | null) => void;
  private inputClosed = false;
  private reader?: ReadableStreamDefaultReader<Uint8Array>;
  private wantRead = false;
  private reading = false;

  constructor(
    transform: (input: ReadableStream<Uint8Array>) => Promise<ReadableStream<Uint8Array>>,
    private readonly mapError: (e: unknown) => Error,
  ) {
    super({ readableHighWaterMark: OUTPUT_HIGH_WATER, writableHighWaterMark: 64 * 1024 });
    const input = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.controller = c;
        },
        pull: () => this.releaseWrite(),
        cancel: () => {
          // The transform stopped reading (done, or failed): accept and drop further input.
          this.inputClosed = true;
          this.releaseWrite();
        },
      },
      { highWaterMark: INPUT_QUEUE_BYTES, size: (chunk) => chunk.byteLength },
    );
    let output: Promise<ReadableStream<Uint8Array>>;
    try {
      output = transform(input);
    } catch (e) {
      output = Promise.reject(e);
    }
    output.then(
      (stream) => {
        if (this.destroyed) {
          stream.cancel().catch(() => undefined);
          return;
        }
        this.reader = stream.getReader();
        if (this.wantRead) this.pump();
      },
      (e: unknown) => this.destroy(this.mapError(e)),
    );
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.inputClosed) return cb();
    // A view, not a copy: Node's contract is that a written chunk is not modified afterwards.
    this.controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    if ((this.controller.desiredSize ?? 0) > 0) cb();
    else this.pendingWrite = cb;
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.inputClosed) {
      this.inputClosed = true;
      this.controller.close();
    }
    cb();
  }

  override _read(): void {
    this.wantRead = true;
    if (this.reader) this.pump();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    const reason = err ?? new Error('stream destroyed');
    if (!this.inputClosed) {
      this.inputClosed = true;
      try {
        this.controller.error(reason);
      } catch {
        // already closed or errored
      }
    }
    this.reader?.cancel(reason).catch(() => undefined);
    this.pendingWrite = undefined;
    cb(err);
  }

  private releaseWrite(): void {
    const cb = this.pendingWrite;
    this.pendingWrite = undefined;
    cb?.();
  }

  private pump(): void {
    if (this.reading || !this.reader || this.destroyed) return;
    this.reading = true;
    this.reader.read().then(
      ({ done, value }) => {
        this.reading = false;
        if (this.destroyed) return;
        if (done) {
          this.push(null);
          return;
        }
        // Empty chunks would stall a non-object-mode Readable: skip them and read on.
        if (
          value.byteLength === 0 ||
          this.push(Buffer.from(value.buffer, value.byteOffset, value.byteLength))
        ) {
          this.pump();
        } else {
          this.wantRead = false;
        }
      },
      (e: unknown) => {
        this.reading = false;
        this.destroy(this.mapError(e));
      },
    );
  }
}
