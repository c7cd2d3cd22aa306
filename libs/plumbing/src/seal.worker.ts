import type { Duplex } from 'node:stream';
import { workerData } from 'node:worker_threads';
import { getCodec } from '@dbcrate/compression';
import { getCipher } from '@dbcrate/crypto';
import { serveWorkerStage } from './worker.stage.host';
import type { SealSpec } from './seal.stage';

// A seal stage's worker thread: compression then encryption, through the registries, so
// whichever codec and cipher implementations are the defaults are the ones used.
serveWorkerStage(
  (data): Duplex[] => {
    const spec = data as SealSpec;
    const stages: Duplex[] = [];
    if (spec.codec) {
      const codec = getCodec(spec.codec.name, { implementation: spec.codec.implementation });
      stages.push(codec.compressor({ level: spec.codec.level, threads: spec.codec.threads }));
    }
    if (spec.cipher) stages.push(getCipher(spec.cipher.name).encryptor(spec.cipher.recipients));
    return stages;
  },
  // libzstd copies its input before it asks for more: its buffers can go back for reuse.
  { recycleInput: (workerData as SealSpec).codec !== undefined },
);
