import { randomBytes, timingSafeEqual } from 'node:crypto';
import { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes, toDbcrateError } from '@dbcrate/core';
import type { Storage } from './storage';
import { causeText } from './storage.util';

export type ProbeStepName = 'list' | 'write' | 'read' | 'delete';

export interface ProbeStep {
  name: ProbeStepName;
  ms: number;
}

export interface ProbeResult {
  displayUrl: string;
  steps: ProbeStep[];
  totalMs: number;
}

/**
 * Probe objects sit at the root (`.dbcrate-probe-<time>-<random>`), not in a folder: on file
 * and SFTP a folder would stay behind after the delete (older versions left `.dbcrate-probe/`).
 */
export const PROBE_PREFIX = '.dbcrate-probe-';

const STORAGE_CODES = new Set<string>([
  ErrorCodes.STORAGE_UNREACHABLE,
  ErrorCodes.STORAGE_DENIED,
  ErrorCodes.STORAGE_IO,
  ErrorCodes.STORAGE_NOT_FOUND,
  ErrorCodes.HOST_KEY,
]);

async function readAll(r: Readable, limit: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of r as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) {
      r.destroy();
      break;
    }
    parts.push(c);
  }
  return Buffer.concat(parts);
}

/**
 * Validate a destination end to end before it is saved: list, write a small random object
 * at the root (.dbcrate-probe-…), read it back and compare, delete it. A failing step throws a
 * DbcrateError naming the step; the probe object is removed whatever happens.
 */
export async function probeStorage(storage: Storage): Promise<ProbeResult> {
  const steps: ProbeStep[] = [];
  const started = Date.now();
  const key = `${PROBE_PREFIX}${Date.now()}-${randomBytes(6).toString('hex')}`;
  const payload = randomBytes(1024);
  let written = false;

  const step = async (name: ProbeStepName, fn: () => Promise<void>): Promise<void> => {
    const t0 = Date.now();
    try {
      await fn();
    } catch (e) {
      const err = toDbcrateError(e, ErrorCodes.STORAGE_IO);
      const code = STORAGE_CODES.has(err.code) ? err.code : ErrorCodes.STORAGE_IO;
      throw new DbcrateError(
        code,
        `storage check of ${storage.displayUrl} failed at step "${name}": ${causeText(err)}`,
        {
          cause: err,
          hint: err.hint,
        },
      );
    }
    steps.push({ name, ms: Date.now() - t0 });
  };

  try {
    await step('list', async () => {
      for await (const _ of storage.list(PROBE_PREFIX)) break;
    });
    await step('write', async () => {
      await storage.put(key, Readable.from([payload]), { ifNotExists: true });
      written = true;
    });
    await step('read', async () => {
      const back = await readAll(await storage.get(key), payload.length * 2);
      if (back.length !== payload.length || !timingSafeEqual(back, payload)) {
        throw new DbcrateError(
          ErrorCodes.STORAGE_IO,
          `read back ${back.length} bytes that differ from the ${payload.length} bytes written`,
          {
            hint: 'something between dbcrate and the storage alters objects (a proxy, a gateway, a broken provider)',
          },
        );
      }
    });
    await step('delete', async () => {
      await storage.delete(key);
      written = false;
      if (await storage.head(key)) {
        throw new DbcrateError(ErrorCodes.STORAGE_IO, 'the probe object is still there after delete', {
          hint: 'check that the credentials allow deleting objects (retention needs it)',
        });
      }
    });
  } finally {
    if (written) await storage.delete(key).catch(() => undefined);
    // The empty folder older versions left behind (their probes lived in .dbcrate-probe/).
    await storage.removeEmptyDir?.('.dbcrate-probe').catch(() => undefined);
  }
  return { displayUrl: storage.displayUrl, steps, totalMs: Date.now() - started };
}
