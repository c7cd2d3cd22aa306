import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ZstdImplementation } from '@dbcrate/compression';
import type { RecipientKey } from '@dbcrate/crypto';
import { WorkerStage, type WorkerEntry, type WorkerStageOptions } from './worker.stage';

/** What a seal stage does: plain data, sent to its worker thread. */
export interface SealSpec {
  codec?: { name: string; implementation?: ZstdImplementation; level?: number; threads?: number };
  cipher?: { name: string; recipients: RecipientKey[] };
}

/**
 * Where a worker entry (`<name>.worker.ts` next to this file) is: the built .js, or, run
 * from TypeScript sources (tests), the .ts with the test loader that compiles it.
 */
export function workerEntry(name: string): WorkerEntry {
  const js = join(__dirname, `${name}.worker.js`);
  if (existsSync(js)) return { file: js };
  const loader = join(__dirname, '..', '..', 'testing', 'jest', 'ts-worker.register.js');
  return { file: join(__dirname, `${name}.worker.ts`), execArgv: ['--require', loader] };
}

/**
 * Compress then encrypt in a worker thread owned by this stage (created with it, gone
 * when it ends or is destroyed): the event loop only moves buffers.
 */
export function sealStage(
  spec: SealSpec,
  opts: Partial<Omit<WorkerStageOptions, 'workerData'>> = {},
): WorkerStage {
  return new WorkerStage({
    worker: workerEntry('seal'),
    what: 'compress and encrypt',
    ...opts,
    workerData: spec,
  });
}
