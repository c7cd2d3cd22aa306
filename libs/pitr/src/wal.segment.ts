import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { readSegmentHeader, type WalFileName } from './wal.names';

/**
 * Reading and checking a WAL file before it is archived: what the archiver does on its own
 * thread, and the agent's seal workers do on theirs (into a buffer each worker reuses).
 */

export function unreadable(path: string, e: unknown): DbcrateError {
  return new DbcrateError(
    ErrorCodes.USAGE,
    `cannot read WAL file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    { hint: 'archive_command must pass %p (the path relative to the data directory, where it runs)' },
  );
}

/**
 * The whole file, read synchronously into `reuse` when it is big enough (the result is then
 * a view of it, valid until the next read), else into a new buffer that the caller may keep
 * for next time. A file that grows while it is read is read to its end.
 */
export function readWalFileSync(path: string, reuse?: Buffer): { data: Buffer; buffer: Buffer } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw unreadable(path, e);
  }
  try {
    const size = fstatSync(fd).size;
    // one byte more than the size: reading it tells that the file grew
    let buffer = reuse && reuse.length > size ? reuse : Buffer.allocUnsafe(size + 1);
    let n = 0;
    for (;;) {
      if (n === buffer.length) {
        const bigger = Buffer.allocUnsafe(buffer.length * 2);
        buffer.copy(bigger, 0, 0, n);
        buffer = bigger;
      }
      const got = readSync(fd, buffer, n, buffer.length - n, n);
      if (got === 0) break;
      n += got;
    }
    return { data: buffer.subarray(0, n), buffer };
  } catch (e) {
    throw unreadable(path, e);
  } finally {
    closeSync(fd);
  }
}

/**
 * Page header, system identifier and size of a segment (or .partial): refuse what is not
 * this cluster's WAL. Returns the segment size from the header.
 */
export function checkSegment(name: WalFileName, plain: Buffer, systemIdentifier: string): number {
  const header = readSegmentHeader(plain);
  if (!header || header.magic === 0) {
    throw new DbcrateError(ErrorCodes.INTEGRITY, `${name.name} does not start with a WAL page header`, {
      hint: 'this is not a WAL segment written by PostgreSQL; nothing was archived',
    });
  }
  if (header.systemIdentifier !== systemIdentifier) {
    throw new DbcrateError(
      ErrorCodes.CLUSTER_MISMATCH,
      `${name.name} belongs to the cluster with system identifier ${header.systemIdentifier}, but this data directory is ${systemIdentifier}`,
      { hint: 'WAL from another cluster was handed to wal-push; nothing was archived' },
    );
  }
  // A .partial is a whole segment too (zeros after the switch point): shorter is truncated.
  if (plain.length !== header.segmentSize) {
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      `${name.name} is ${plain.length} bytes; its header says segments are ${header.segmentSize}`,
      {
        hint: 'the segment is incomplete; PostgreSQL only archives complete segments, so something else truncated it',
      },
    );
  }
  return header.segmentSize;
}

/** A DbcrateError as plain data, to cross a worker thread (structured clone drops code and hint). */
export interface ErrorData {
  code: DbcrateError['code'];
  message: string;
  hint?: string;
}

export function errorData(e: DbcrateError): ErrorData {
  return { code: e.code, message: e.message, hint: e.hint };
}

export function fromErrorData(d: ErrorData): DbcrateError {
  return new DbcrateError(d.code, d.message, { hint: d.hint });
}
