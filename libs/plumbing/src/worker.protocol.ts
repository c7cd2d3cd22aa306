import { DbcrateError, ErrorCodes, isDbcrateError, type ErrorCode } from '@dbcrate/core';

/** Main thread → worker. */
export type ToWorker = { t: 'data'; buf: ArrayBuffer; len: number } | { t: 'end' };

/** Worker → main thread. */
export type FromWorker =
  /** The worker took `len` bytes; `buf`, when there, is an earlier input buffer it is done with. */
  | { t: 'ack'; len: number; buf?: ArrayBuffer }
  | { t: 'out'; buf: ArrayBuffer; len: number }
  | { t: 'done' }
  | { t: 'error'; error: WireError };

/** An error as it crosses the thread boundary: a DbcrateError keeps its code and hint. */
export interface WireError {
  dbcrate: boolean;
  code?: string;
  message: string;
  hint?: string;
  name?: string;
}

export function toWire(e: unknown): WireError {
  if (isDbcrateError(e)) return { dbcrate: true, code: e.code, message: e.message, hint: e.hint };
  const err = e instanceof Error ? e : new Error(String(e));
  const code = (err as { code?: unknown }).code;
  return {
    dbcrate: false,
    message: err.message,
    name: err.name,
    code: typeof code === 'string' ? code : undefined,
  };
}

export function fromWire(w: WireError): Error {
  if (w.dbcrate) {
    const code = (w.code ?? ErrorCodes.INTERNAL) as ErrorCode;
    return new DbcrateError(code, w.message, w.hint !== undefined ? { hint: w.hint } : {});
  }
  const err = new Error(w.message);
  if (w.name) err.name = w.name;
  if (w.code) (err as Error & { code?: string }).code = w.code;
  return err;
}
