import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/** Keys are "/"-separated relative paths; anything that could escape the root is refused. */
export function checkKey(key: string): void {
  const bad =
    typeof key !== 'string' ||
    key === '' ||
    key.startsWith('/') ||
    key.endsWith('/') ||
    key.includes('\0') ||
    key.includes('\\') ||
    key.split('/').some((s) => s === '' || s === '.' || s === '..');
  if (bad) {
    throw new DbcrateError(ErrorCodes.INTERNAL, `invalid object key ${JSON.stringify(key)}`, {
      hint: 'keys are relative paths like "db/dumps/2025-01-01/x.dump.zst.pgp"',
    });
  }
  if (isTempName(baseName(key))) {
    throw new DbcrateError(
      ErrorCodes.INTERNAL,
      `object key ${JSON.stringify(key)} looks like a temporary file name`,
    );
  }
}

export function checkPrefix(prefix: string): void {
  if (
    typeof prefix !== 'string' ||
    prefix.startsWith('/') ||
    prefix.split('/').some((s) => s === '..' || s === '.')
  ) {
    throw new DbcrateError(ErrorCodes.INTERNAL, `invalid key prefix ${JSON.stringify(prefix)}`);
  }
}

export function baseName(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1);
}

export function dirName(key: string): string {
  const i = key.lastIndexOf('/');
  return i < 0 ? '' : key.slice(0, i);
}

const TEMP = /^\..+\.tmp-[0-9a-f]{16}$/;

/** A hidden sibling name for an upload in progress; `list` never shows such names. */
export function tempNameFor(base: string): string {
  return `.${base}.tmp-${randomBytes(8).toString('hex')}`;
}

export function isTempName(name: string): boolean {
  return TEMP.test(name);
}

export function interrupted(what: string): DbcrateError {
  return new DbcrateError(ErrorCodes.INTERRUPTED, `${what} was aborted`);
}

const sourceErrors = new WeakSet<object>();

/**
 * True for an error the caller's body stream raised (a producer failing midway): a put
 * passes it on unchanged, since storage is not what failed.
 */
export function isSourceError(e: unknown): boolean {
  return e !== null && typeof e === 'object' && sourceErrors.has(e);
}

/**
 * The body's chunks as Buffers (strings and Uint8Arrays from object-mode sources included).
 * An abort destroys the body so a pending read ends at once; the iteration then throws
 * E_INTERRUPTED rather than whatever the source reports.
 */
export async function* chunksOf(
  body: Readable,
  signal: AbortSignal | undefined,
  what: string,
): AsyncGenerator<Buffer> {
  if (signal?.aborted) throw interrupted(what);
  const onAbort = (): void => {
    body.destroy(interrupted(what));
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const c of body as AsyncIterable<unknown>) {
      if (signal?.aborted) throw interrupted(what);
      if (Buffer.isBuffer(c)) yield c;
      else if (typeof c === 'string') yield Buffer.from(c);
      else if (c instanceof Uint8Array) yield Buffer.from(c.buffer, c.byteOffset, c.byteLength);
      else throw new DbcrateError(ErrorCodes.INTERNAL, `${what}: the source produced a non-binary chunk`);
    }
    if (signal?.aborted) throw interrupted(what);
  } catch (e) {
    if (signal?.aborted) throw interrupted(what);
    if (e !== null && typeof e === 'object') sourceErrors.add(e);
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Stop a caller's stream after a failed put, so the producer upstream does not hang. */
export function discard(body: Readable): void {
  if (!body.destroyed) body.destroy();
}

/** First line of an error message, for composing "… : cause" messages. */
export function causeText(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split('\n')[0] || (e instanceof Error ? e.name : 'unknown error');
}

/** What a storage call was doing when it failed; named in error messages. */
export type StorageOp = 'write' | 'read' | 'stat' | 'list' | 'delete' | 'connect';
export const OP_VERB: Record<StorageOp, string> = {
  write: 'write',
  read: 'read',
  stat: 'check',
  list: 'list',
  delete: 'delete',
  connect: 'connect to',
};
