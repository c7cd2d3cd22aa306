import { parentPort, workerData } from 'node:worker_threads';
import { Writable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { toWire, type FromWorker, type ToWorker } from './worker.protocol';

/** Output is gathered into chunks this big before it crosses to the main thread. */
const OUT_CHUNK = 256 * 1024;

export interface ServeOptions {
  /**
   * Send input buffers back for reuse. Only for a first stage that is done with a chunk
   * once it takes the next one (it copies its input, as the zstd compressors do).
   */
  recycleInput?: boolean;
}

/**
 * The worker side of a WorkerStage: input from the main thread runs through the stages
 * `build` makes from workerData, and their output goes back in big transferred chunks.
 * Each input chunk is acknowledged once the first stage has taken it, which is what bounds
 * what the main thread has in flight.
 */
export function serveWorkerStage(build: (data: unknown) => Duplex[], opts: ServeOptions = {}): void {
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
    if (stages.length === 0) throw new Error('a worker stage needs at least one stage');
  } catch (e) {
    fail(e);
    return;
  }

  const first = stages[0];
  let previous: ArrayBuffer | undefined;
  port.on('message', (m: ToWorker) => {
    if (m.t === 'end') {
      first.end();
      return;
    }
    const taken = m.buf;
    first.write(Buffer.from(taken, 0, m.len), (err) => {
      if (err || failed) return;
      // Taking this chunk means the stage is done with the one before.
      const back = opts.recycleInput ? previous : undefined;
      previous = taken;
      if (back) send({ t: 'ack', len: m.len, buf: back }, [back]);
      else send({ t: 'ack', len: m.len });
    });
  });

  let out = Buffer.allocUnsafeSlow(OUT_CHUNK);
  let outLen = 0;
  const flush = () => {
    if (outLen === 0) return;
    const buf = out.buffer as ArrayBuffer;
    send({ t: 'out', buf, len: outLen }, [buf]);
    out = Buffer.allocUnsafeSlow(OUT_CHUNK);
    outLen = 0;
  };
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (let src = chunk; src.length > 0;) {
        const n = Math.min(src.length, OUT_CHUNK - outLen);
        src.copy(out, outLen, 0, n);
        outLen += n;
        src = src.subarray(n);
        if (outLen === OUT_CHUNK) flush();
      }
      cb();
    },
  });

  pipeline([...stages, sink]).then(() => {
    flush();
    send({ t: 'done' });
    port.close();
  }, fail);
}
