import { threadId } from 'node:worker_threads';
import { sealWal, sha256Hex, type WalSealOptions } from './wal.archive';

/** Runs in a worker thread of the agent: hashing, compression and encryption off the event loop. */
export default async function hashAndSeal(
  task: { plain: Uint8Array; opts: WalSealOptions; walFile?: string } | { warm: true },
): Promise<{ sha256: string; sealed: Uint8Array } | number> {
  if ('warm' in task) {
    // the agent's start: this thread is up with its modules loaded; a short wait lets the
    // other warm-up tasks reach the other threads
    await new Promise((r) => setTimeout(r, 20));
    return threadId;
  }
  const sha256 = sha256Hex(task.plain);
  return { sha256, sealed: await sealWal(task.plain, task.opts, task.walFile) };
}
