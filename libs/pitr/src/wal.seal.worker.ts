import { sealWal, sha256Hex, type WalSealOptions } from './wal.archive';

/** Runs in a worker thread of the agent: hashing, compression and encryption off the event loop. */
export default async function hashAndSeal(task: {
  plain: Uint8Array;
  opts: WalSealOptions;
  walFile?: string;
}): Promise<{ sha256: string; sealed: Uint8Array }> {
  const sha256 = sha256Hex(task.plain);
  return { sha256, sealed: await sealWal(task.plain, task.opts, task.walFile) };
}
