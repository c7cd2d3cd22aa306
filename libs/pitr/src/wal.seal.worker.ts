import { Piscina } from 'piscina';
import { sealWal, type WalSealOptions } from './wal.archive';

/** Runs in a worker thread of the agent: compression and encryption off the event loop. */
export default async function seal(task: { plain: Uint8Array; opts: WalSealOptions }): Promise<unknown> {
  const sealed = await sealWal(task.plain, task.opts);
  return Piscina.move(sealed);
}
