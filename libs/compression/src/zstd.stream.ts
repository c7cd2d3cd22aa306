import { Duplex } from 'node:stream';
import { DbcrateError, ErrorCodes, isDbcrateError } from '@dbcrate/core';

/**
 * A codec stage as a Duplex driven by an async generator: the generator pulls input
 * chunks and yields output chunks, and only runs while the reader wants more, so one
 * input chunk and one output chunk are in flight at most (bounded memory, even for a
 * decompression bomb). Errors thrown inside become the stream's error.
 *
 * Not `Duplex.from(asyncGenerator)`: in Node 20, destroying that while the generator
 * awaits input never settles — no 'close', the generator's `finally` never runs (so
 * native resources leak) and its abort signal is never raised.
 */
export function generatorDuplex(
  transform: (input: AsyncIterable<Buffer>) => AsyncGenerator<Buffer>,
  onClose?: () => void,
): Duplex {
  const duplex = new GeneratorDuplex(transform);
  if (onClose) duplex.once('close', onClose);
  return duplex;
}

type WriteCallback = (err?: Error | null) => void;

class GeneratorDuplex extends Duplex {
  private readonly gen: AsyncGenerator<Buffer>;
  /** The generator waiting for its next input chunk. */
  private waiting?: { resolve: (r: IteratorResult<Buffer>) => void; reject: (e: Error) => void };
  /** One written chunk the generator has not taken yet; its callback is held (backpressure). */
  private queued?: { chunk: Buffer; cb: WriteCallback };
  private inputEnded = false;
  private failure?: Error;
  private pulling = false;

  constructor(transform: (input: AsyncIterable<Buffer>) => AsyncGenerator<Buffer>) {
    super();
    const input: AsyncIterable<Buffer> = {
      [Symbol.asyncIterator]: () => ({ next: () => this.nextInput() }),
    };
    this.gen = transform(input);
  }

  private nextInput(): Promise<IteratorResult<Buffer>> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.queued) {
      const { chunk, cb } = this.queued;
      this.queued = undefined;
      process.nextTick(cb);
      return Promise.resolve({ done: false, value: chunk });
    }
    if (this.inputEnded) return Promise.resolve({ done: true, value: undefined });
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: WriteCallback): void {
    if (chunk.length === 0) return cb();
    const waiting = this.waiting;
    if (waiting) {
      this.waiting = undefined;
      waiting.resolve({ done: false, value: chunk });
      cb();
    } else {
      this.queued = { chunk, cb };
    }
  }

  override _final(cb: WriteCallback): void {
    this.inputEnded = true;
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.resolve({ done: true, value: undefined });
    cb();
  }

  override _read(): void {
    this.pull();
  }

  private pull(): void {
    if (this.pulling || this.destroyed) return;
    this.pulling = true;
    this.gen.next().then(
      (r) => {
        this.pulling = false;
        if (this.destroyed) {
          // Destroyed while it ran: let it unwind (its `finally` frees resources).
          if (!r.done) this.gen.return(undefined).catch(() => undefined);
          return;
        }
        if (r.done) this.push(null);
        else if (this.push(r.value)) this.pull();
      },
      (e: unknown) => {
        this.pulling = false;
        this.destroy(e instanceof Error ? e : new Error(String(e)));
      },
    );
  }

  override _destroy(err: Error | null, cb: WriteCallback): void {
    const reason = err ?? new Error('stream destroyed');
    this.failure = reason;
    const waiting = this.waiting;
    this.waiting = undefined;
    if (waiting)
      waiting.reject(reason); // it throws where it awaited input, and unwinds
    else if (!this.pulling) this.gen.return(undefined).catch(() => undefined); // parked at a yield
    const queued = this.queued;
    this.queued = undefined;
    queued?.cb(reason);
    cb(err);
  }
}

/** Turn what a zstd library threw into a DbcrateError (E_INTEGRITY when decompressing, E_CODEC otherwise). */
export function zstdError(
  e: unknown,
  implementation: string,
  direction: 'compress' | 'decompress',
): DbcrateError {
  if (isDbcrateError(e)) return e;
  const detail = e instanceof Error ? e.message : String(e);
  if (direction === 'decompress') {
    // Data that does not decompress is damaged data, like a checksum mismatch (exit 6).
    return new DbcrateError(ErrorCodes.INTEGRITY, `zstd data is corrupt: ${detail} (${implementation})`, {
      hint: 'The object is damaged, or it is not zstd-compressed data.',
      cause: e,
    });
  }
  return new DbcrateError(ErrorCodes.CODEC, `zstd compression failed: ${detail} (${implementation})`, {
    cause: e,
  });
}

/** Validate a zstd level/threads pair once, with messages a user can act on. */
export function checkCompressOptions(level: number, threads: number): void {
  if (!Number.isInteger(level) || level < 1 || level > 22) {
    throw new DbcrateError(ErrorCodes.USAGE, `zstd level must be an integer from 1 to 22, got ${level}`, {
      hint: 'Levels 1-19 are normal; 3 is the default.',
    });
  }
  if (!Number.isInteger(threads) || threads < 0 || threads > 64) {
    throw new DbcrateError(ErrorCodes.USAGE, `zstd threads must be an integer from 0 to 64, got ${threads}`);
  }
}
