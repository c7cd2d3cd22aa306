import { parentPort, workerData } from 'node:worker_threads';
import { Readable, Transform, Writable, type Duplex, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { toWire, type FromWorker, type ToWorker } from './worker.protocol';

/** Output is gathered into chunks this big before it crosses to the main thread. */
const OUT_CHUNK = 1024 * 1024;

/**
 * The worker side of a WorkerStage: input from the main thread runs through the stages
 * `build` makes from workerData, and their output goes back in big transferred chunks.
 * Each input chunk is acknowledged once the first stage pulls it, which is what bounds
 * what the main thread has in flight.
 */
export function serveWorkerStage(build: (data: unknown) => Duplex[]): void {
  const port = parentPort;
  if (!port) throw new Error('serveWorkerStage runs only in a worker thread');
  const send = (m: FromWorker, transfer?: ArrayBuffer[]) => port.postMessage(m, transfer);
  let failed = false;
  const fail = (e: unknown) => {
    if (failed) return;
    failed = true;
    send({ t: 'error', error: toWire(e) });
    port.close();
  };

  let stages: Duplex[];
  try {
    stages = build(workerData);
  } catch (e) {
    fail(e);
    return;
  }

  // Fed from messages; never holds more than the main thread's in-flight bound.
  const input = new Readable({ read() {}, highWaterMark: 0 });
  port.on('message', (m: ToWorker) => {
    if (m.t === 'end') input.push(null);
    else input.push(Buffer.from(m.buf, 0, m.len));
  });

  let out = new Uint8Array(OUT_CHUNK);
  let outLen = 0;
  const flush = () => {
    if (outLen === 0) return;
    const buf = out.buffer as ArrayBuffer;
    send({ t: 'out', buf, len: outLen }, [buf]);
    out = new Uint8Array(OUT_CHUNK);
    outLen = 0;
  };
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (let src = chunk; src.length > 0;) {
        const n = Math.min(src.length, OUT_CHUNK - outLen);
        out.set(src.subarray(0, n), outLen);
        outLen += n;
        src = src.subarray(n);
        if (outLen === OUT_CHUNK) flush();
      }
      cb();
    },
  });

  pipeline([input, new AckStream((len) => send({ t: 'ack', len })), ...stages, sink]).then(() => {
    flush();
    send({ t: 'done' });
    port.close();
  }, fail);
}

/** Passes chunks on one at a time and reports each once it is taken from the input. */
class AckStream extends Transform {
  constructor(private readonly onTaken: (len: number) => void) {
    super({ readableHighWaterMark: 0, writableHighWaterMark: 0 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.onTaken(chunk.length);
    cb(null, chunk);
  }
}
