import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DbcrateError, ErrorCodes, MeterStream } from '@dbcrate/core';
import type { Storage } from '@dbcrate/storage';
import type { ToolRun } from './child-process.stream';

export interface StoreToolOutputOptions {
  /** The running tool (pg_dump, pg_basebackup) whose stdout is stored. */
  tool: ToolRun;
  /** Stages between the tool's stdout and storage (scanners, meters, compressor, encryptor). */
  stages: Duplex[];
  storage: Storage;
  key: string;
  signal?: AbortSignal;
  /** What is being stored, for the interruption message ("backup", "base backup"). */
  what: string;
  /** Last check once everything has been stored; throwing removes the object like any failure. */
  verify?: () => void;
  /**
   * Folders to remove after a failure if they are then empty, in order (a base backup's own
   * folder, then its parent), on storages that have folders; never one holding anything.
   */
  removeEmptyDirs?: string[];
  /** Adds context (e.g. the tool's stderr) to the error reported. */
  describe?: (e: unknown) => unknown;
}

/**
 * Stream a tool's output through `stages` into one storage object. The object only
 * completes once the tool has exited 0 and every stage has ended; an error anywhere (or
 * the signal) aborts the upload and removes whatever was stored, so nothing that looks
 * like data remains. Only an object this run created is removed: a put refused because the
 * key exists (another writer's object) is never followed by a delete. Several parts fail together when one does: the first real cause is
 * reported, not the "premature close" the others see as a consequence.
 * Returns the meter of the stored bytes (size and sha256).
 */
export async function storeToolOutput(opts: StoreToolOutputOptions): Promise<MeterStream> {
  const stored = new MeterStream();
  const abort = new AbortController();
  const onOuterAbort = () => abort.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onOuterAbort, { once: true });

  let firstError: unknown;
  const note = (e: unknown) => {
    const code = (e as { code?: string })?.code;
    if (firstError === undefined && code !== 'ERR_STREAM_PREMATURE_CLOSE' && code !== 'ABORT_ERR') {
      firstError = e;
    }
    abort.abort(e);
    throw e;
  };
  const chainDone = pipeline([opts.tool.stdout, ...opts.stages, stored]).catch(note);
  let created = false;
  let storageError: unknown;
  const putDone = opts.storage
    .put(opts.key, stored, { signal: abort.signal, ifNotExists: true })
    .then(() => {
      created = true;
    })
    .catch((e: unknown) => {
      if (String((e as { code?: string })?.code ?? '').startsWith('E_STORAGE_')) storageError = e;
      return note(e);
    });
  const toolDone = opts.tool.exited.catch(note);
  try {
    await Promise.all([putDone, chainDone, toolDone]);
    opts.verify?.();
  } catch (e) {
    opts.tool.kill();
    abort.abort(e);
    // Killing the tool is not enough once its output has ended: a stage still flushing
    // into a put that gave up would wait for a reader forever.
    for (const s of [...opts.stages, stored]) s.destroy();
    await Promise.allSettled([putDone, chainDone, toolDone]);
    // Only now: the part that failed first may settle after the ones that merely saw the
    // stream close under them ("Premature close", what Promise.all rejected with). A storage
    // that refused the object is the cause of the tool's broken pipe, not the other way round.
    firstError = storageError ?? firstError ?? e;
    // The put may have completed before a late error (tool exit code, verify): remove it then,
    // and only then. A failed put left nothing of ours (the backends discard partial objects).
    if (created) await opts.storage.delete(opts.key).catch(() => undefined);
    for (const d of opts.removeEmptyDirs ?? []) await opts.storage.removeEmptyDir?.(d).catch(() => undefined);
    if (opts.signal?.aborted) {
      throw new DbcrateError(ErrorCodes.INTERRUPTED, `${opts.what} interrupted; nothing was kept`);
    }
    throw opts.describe ? opts.describe(firstError) : firstError;
  } finally {
    opts.signal?.removeEventListener('abort', onOuterAbort);
  }
  return stored;
}
