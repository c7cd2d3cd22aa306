import { Transform, type Duplex } from 'node:stream';
import { workerData } from 'node:worker_threads';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { serveWorkerStage } from './worker.stage.host';

/** A worker for the WorkerStage tests; what it does is chosen by workerData.mode. */
export interface FixtureSpec {
  mode: 'upper' | 'fail-build' | 'fail-at' | 'crash' | 'stall';
  /** fail-at: fail once this many bytes went through. */
  after?: number;
}

serveWorkerStage(
  (data): Duplex[] => {
    const spec = data as FixtureSpec;
    if (spec.mode === 'fail-build') {
      throw new DbcrateError(ErrorCodes.CONFIG, 'unknown cipher "nope"', {
        hint: 'Known ciphers: openpgp (.pgp).',
      });
    }
    let seen = 0;
    return [
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          seen += chunk.length;
          if (spec.mode === 'stall') return; // never calls back: the main thread must stop sending
          if (spec.mode === 'crash') process.exit(3);
          if (spec.mode === 'fail-at' && seen >= (spec.after ?? 0)) {
            return cb(
              new DbcrateError(ErrorCodes.INTEGRITY, 'data is damaged', {
                hint: 'Restore another snapshot.',
              }),
            );
          }
          const out = Buffer.from(chunk);
          for (let i = 0; i < out.length; i++) if (out[i] >= 97 && out[i] <= 122) out[i] -= 32;
          cb(null, out);
        },
      }),
    ];
  },
  // The transform copies each chunk before it takes the next.
  { recycleInput: (workerData as FixtureSpec).mode === 'upper' },
);
