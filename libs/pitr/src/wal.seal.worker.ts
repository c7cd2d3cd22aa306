import { threadId } from 'node:worker_threads';
import { Piscina, transferableSymbol, valueSymbol } from 'piscina';
import { isDbcrateError } from '@dbcrate/core';
import { sealWal, sha256Hex, type SealedSegment, type WalSealOptions } from './wal.archive';
import { requireWalFileName } from './wal.names';
import { checkSegment, errorData, readWalFileSync, type ErrorData } from './wal.segment';

export interface SealTask {
  /** Absolute path of the segment. */
  path: string;
  walFile: string;
  systemIdentifier: string;
  opts: WalSealOptions;
}

/** A DbcrateError comes back as data: a thrown error would lose its code and hint on the way. */
export type SealTaskResult = SealedSegment | { error: ErrorData };

/** What this thread reads segments into, kept from one to the next (one task at a time). */
let readBuffer: Buffer | undefined;
let reading = false;

/**
 * Runs in a worker thread of the agent: reading, checking, hashing, compression and
 * encryption of a segment, off the event loop, without a new 16 MiB buffer per segment.
 */
export default async function sealSegment(task: SealTask | { warm: true }): Promise<unknown> {
  if ('warm' in task) {
    // the agent's start: this thread is up with its modules loaded; a short wait lets the
    // other warm-up tasks reach the other threads
    await new Promise((r) => setTimeout(r, 20));
    return threadId;
  }
  let result: SealedSegment;
  // the agent runs one task per thread; were two to overlap, the second reads into its own
  const owner = !reading;
  reading = true;
  try {
    const name = requireWalFileName(task.walFile);
    const { data: plain, buffer } = readWalFileSync(task.path, owner ? readBuffer : undefined);
    if (owner) readBuffer = buffer;
    const segmentSize = checkSegment(name, plain, task.systemIdentifier);
    const sha256 = sha256Hex(plain);
    const sealed = await sealWal(plain, task.opts, task.walFile);
    result = { sha256, sealed, plainBytes: plain.length, segmentSize };
  } catch (e) {
    if (isDbcrateError(e)) return { error: errorData(e) } satisfies SealTaskResult;
    throw e;
  } finally {
    if (owner) reading = false;
  }
  // The sealed object goes to the agent's thread without a copy when it owns its memory
  // (a small one may be a slice of Node's shared pool: that one is copied).
  const { sealed } = result;
  if (sealed.byteOffset !== 0 || sealed.byteLength !== sealed.buffer.byteLength) return result;
  return Piscina.move({ [transferableSymbol]: [sealed.buffer], [valueSymbol]: result });
}
