import { Duplex } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { fromWire, type FromWorker, type ToWorker } from './worker.protocol';

/** Where a worker's code is, and how to start it (execArgv: e.g. a loader when run from sources). */
export interface WorkerEntry {
  file: string;
  execArgv?: string[];
}

export interface WorkerStageOptions {
  worker: WorkerEntry;
  /** Plain data for the worker's stage builder (structured-cloned). */
  workerData: unknown;
  /** Input is gathered into chunks this big before it is sent (default 256 KiB). */
  chunkSize?: number;
  /** Bytes sent that the worker has not taken yet; writes wait above this (default 1 MiB). */
  maxInFlight?: number;
  /** What the stage does, for the message when its worker dies ("compress and encrypt"). */
  what?: string;
}

type Callback = (err?: Error | null) => void;

/**
 * A Duplex on the calling thread whose work runs in its own worker thread: input is
 * gathered into big chunks that are transferred (not copied) to the worker, and the
 * worker's output comes back the same way, in order. Memory stays bounded: a write waits
 * while `maxInFlight` bytes are with the worker or the reader is not reading. Destroying
 * the stage (an error anywhere in the pipeline, an abort) terminates the worker; errors
 * inside the worker arrive as the same DbcrateError (code, message, hint).
 */
export class WorkerStage extends Duplex {
  /** Resolves with the worker's exit code once its thread is gone. */
  readonly exited: Promise<number>;
  private readonly worker: Worker;
  private readonly chunkSize: number;
  private readonly maxInFlight: number;
  private buf: Buffer;
  /** Input buffers the worker sent back, reused instead of new ones. */
  private readonly pool: ArrayBuffer[] = [];
  private bufLen = 0;
  private inFlight = 0;
  private readerWaiting = true;
  private heldWrite?: Callback;
  private heldFinal?: Callback;
  private done = false;

  constructor(opts: WorkerStageOptions) {
    super({ readableHighWaterMark: 256 * 1024 });
    this.chunkSize = opts.chunkSize ?? 256 * 1024;
    this.maxInFlight = opts.maxInFlight ?? 1024 * 1024;
    this.buf = Buffer.allocUnsafeSlow(this.chunkSize);
    const what = opts.what ?? 'worker stage';
    this.worker = new Worker(opts.worker.file, {
      workerData: opts.workerData,
      execArgv: opts.worker.execArgv,
      stdout: false,
      stderr: false,
    });
    this.exited = new Promise((resolve) => this.worker.once('exit', resolve));
    this.worker.on('message', (m: FromWorker) => this.onMessage(m));
    this.worker.on('error', (e) => this.destroy(e));
    this.worker.once('exit', (code) => {
      if (!this.done && !this.destroyed) {
        this.destroy(
          new DbcrateError(
            ErrorCodes.INTERNAL,
            `the ${what} worker thread exited (code ${code}) before it finished`,
          ),
        );
      }
    });
  }

  private onMessage(m: FromWorker): void {
    if (this.destroyed) return;
    switch (m.t) {
      case 'ack':
        this.inFlight -= m.len;
        if (m.buf && m.buf.byteLength === this.chunkSize && this.pool.length < 8) this.pool.push(m.buf);
        this.release();
        break;
      case 'out':
        if (!this.push(Buffer.from(m.buf, 0, m.len))) this.readerWaiting = false;
        break;
      case 'done': {
        this.done = true;
        this.push(null);
        const cb = this.heldFinal;
        this.heldFinal = undefined;
        cb?.();
        break;
      }
      case 'error':
        this.destroy(fromWire(m.error));
        break;
    }
  }

  private send(): void {
    if (this.bufLen === 0) return;
    const ab = this.buf.buffer as ArrayBuffer;
    const msg: ToWorker = { t: 'data', buf: ab, len: this.bufLen };
    this.worker.postMessage(msg, [ab]);
    this.inFlight += this.bufLen;
    const reuse = this.pool.pop();
    this.buf = reuse ? Buffer.from(reuse) : Buffer.allocUnsafeSlow(this.chunkSize);
    this.bufLen = 0;
  }

  private canTakeMore(): boolean {
    return this.inFlight < this.maxInFlight && this.readerWaiting;
  }

  private release(): void {
    if (this.heldWrite && this.canTakeMore()) {
      const cb = this.heldWrite;
      this.heldWrite = undefined;
      cb();
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: Callback): void {
    for (let src = chunk; src.length > 0;) {
      const n = Math.min(src.length, this.chunkSize - this.bufLen);
      src.copy(this.buf, this.bufLen, 0, n);
      this.bufLen += n;
      src = src.subarray(n);
      if (this.bufLen === this.chunkSize) this.send();
    }
    if (this.canTakeMore()) cb();
    else this.heldWrite = cb;
  }

  override _final(cb: Callback): void {
    this.send();
    this.worker.postMessage({ t: 'end' } satisfies ToWorker);
    this.heldFinal = cb;
  }

  override _read(): void {
    this.readerWaiting = true;
    this.release();
  }

  override _destroy(err: Error | null, cb: Callback): void {
    const held = [this.heldWrite, this.heldFinal];
    this.heldWrite = this.heldFinal = undefined;
    for (const h of held) h?.(err ?? new Error('stream destroyed'));
    const gone = () => cb(err);
    if (!this.done) {
      this.worker.terminate().then(gone, gone);
      return;
    }
    // Finished: the worker is leaving on its own; it is only stopped if it lingers.
    const timer = setTimeout(() => void this.worker.terminate(), 2000);
    void this.exited.then(() => {
      clearTimeout(timer);
      gone();
    });
  }
}
