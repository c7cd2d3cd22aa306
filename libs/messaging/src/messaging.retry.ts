import { ErrorCodes, isDbcrateError, type ErrorCode } from '@dbcrate/core';
import { MalformedMessage } from './messaging.codec';

/**
 * Failures that another delivery cannot fix: the message, its settings or the data are
 * wrong. They are terminated and dead-lettered at once; anything else (a server down, a
 * network, an unknown bug) is retried with backoff until max-deliver.
 */
const PERMANENT = new Set<ErrorCode>([
  ErrorCodes.USAGE,
  ErrorCodes.CONFIG,
  ErrorCodes.BAD_URL,
  ErrorCodes.DB_TOOL_MISSING,
  ErrorCodes.KEY_INVALID,
  ErrorCodes.WRONG_KEY,
  ErrorCodes.PASSPHRASE,
  ErrorCodes.INTEGRITY,
  ErrorCodes.UNTRUSTED,
  ErrorCodes.SNAPSHOT_NOT_FOUND,
  ErrorCodes.SNAPSHOT_INCOMPLETE,
  ErrorCodes.TARGET_NOT_EMPTY,
  ErrorCodes.TARGET_PRODUCTION,
  ErrorCodes.WAL_CONFLICT,
  ErrorCodes.CLUSTER_MISMATCH,
  ErrorCodes.OUT_OF_WINDOW,
  ErrorCodes.TIMELINE_BRANCHES,
]);

export function isRetryable(e: unknown): boolean {
  if (e instanceof MalformedMessage) return false;
  return !(isDbcrateError(e) && PERMANENT.has(e.code));
}

/** The delay before delivery `deliveryCount + 1` after a transient failure of delivery `deliveryCount`. */
export function backoffFor(deliveryCount: number, backoffMs: readonly number[]): number {
  if (backoffMs.length === 0) return 0;
  return backoffMs[Math.min(Math.max(deliveryCount, 1), backoffMs.length) - 1];
}
