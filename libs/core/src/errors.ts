/**
 * Typed errors with stable codes. Every layer throws these; edges translate them
 * (CLI: exit code + one line; later: HTTP status, JetStream term/nak).
 */
export const ErrorCodes = {
  USAGE: 'E_USAGE',
  CONFIG: 'E_CONFIG',
  BAD_URL: 'E_BAD_URL',
  DB_UNREACHABLE: 'E_DB_UNREACHABLE',
  DB_TOOL_MISSING: 'E_DB_TOOL_MISSING',
  DB_TOOL_FAILED: 'E_DB_TOOL_FAILED',
  STORAGE_UNREACHABLE: 'E_STORAGE_UNREACHABLE',
  STORAGE_DENIED: 'E_STORAGE_DENIED',
  STORAGE_NOT_FOUND: 'E_STORAGE_NOT_FOUND',
  STORAGE_CONFLICT: 'E_STORAGE_CONFLICT',
  STORAGE_IO: 'E_STORAGE_IO',
  HOST_KEY: 'E_HOST_KEY',
  KEY_INVALID: 'E_KEY_INVALID',
  WRONG_KEY: 'E_WRONG_KEY',
  PASSPHRASE: 'E_PASSPHRASE',
  INTEGRITY: 'E_INTEGRITY',
  UNTRUSTED: 'E_UNTRUSTED',
  SNAPSHOT_NOT_FOUND: 'E_SNAPSHOT_NOT_FOUND',
  SNAPSHOT_INCOMPLETE: 'E_SNAPSHOT_INCOMPLETE',
  TARGET_NOT_EMPTY: 'E_TARGET_NOT_EMPTY',
  TARGET_PRODUCTION: 'E_TARGET_PRODUCTION',
  CODEC: 'E_CODEC',
  WAL_CONFLICT: 'E_WAL_CONFLICT',
  CLUSTER_MISMATCH: 'E_CLUSTER_MISMATCH',
  WAL_NOT_FOUND: 'E_WAL_NOT_FOUND',
  WAL_GAP: 'E_WAL_GAP',
  OUT_OF_WINDOW: 'E_OUT_OF_WINDOW',
  TIMELINE_BRANCHES: 'E_TIMELINE_BRANCHES',
  RECOVERY_FAILED: 'E_RECOVERY_FAILED',
  INTERRUPTED: 'E_INTERRUPTED',
  /** The WAL agent could not be reached or trusted (socket owner, unauthenticated answer, timeout). */
  AGENT: 'E_AGENT',
  ARCHIVE_CHECK: 'E_ARCHIVE_CHECK',
  INTERNAL: 'E_INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** CLI exit codes, documented in README.md ("Exit codes"). */
export const ExitCodes: Record<ErrorCode, number> = {
  E_USAGE: 2,
  E_CONFIG: 2,
  E_BAD_URL: 2,
  E_DB_UNREACHABLE: 3,
  E_DB_TOOL_MISSING: 3,
  E_DB_TOOL_FAILED: 3,
  E_STORAGE_UNREACHABLE: 4,
  E_STORAGE_DENIED: 4,
  E_STORAGE_NOT_FOUND: 4,
  E_STORAGE_CONFLICT: 4,
  E_STORAGE_IO: 4,
  E_HOST_KEY: 4,
  E_KEY_INVALID: 5,
  E_WRONG_KEY: 5,
  E_PASSPHRASE: 5,
  E_INTEGRITY: 6,
  // not signed by a trusted signer key: possibly forged (docs/signing.md)
  E_UNTRUSTED: 10,
  E_SNAPSHOT_NOT_FOUND: 7,
  E_SNAPSHOT_INCOMPLETE: 7,
  E_TARGET_NOT_EMPTY: 8,
  E_TARGET_PRODUCTION: 8,
  E_CODEC: 1,
  E_WAL_CONFLICT: 9,
  E_CLUSTER_MISMATCH: 9,
  // restore_command contract: 1 = "not in the archive", recovery ends or tries the next timeline
  E_WAL_NOT_FOUND: 1,
  E_WAL_GAP: 7,
  E_OUT_OF_WINDOW: 7,
  // two timelines kept growing after a fork: --timeline must say which
  E_TIMELINE_BRANCHES: 7,
  E_RECOVERY_FAILED: 3,
  E_INTERRUPTED: 130,
  E_AGENT: 4,
  // `dbcrate check`: archiving is off, or the switched segment did not arrive in time
  E_ARCHIVE_CHECK: 11,
  E_INTERNAL: 1,
};

export class DbcrateError extends Error {
  readonly code: ErrorCode;
  /** What the user can do about it; printed after the message. */
  readonly hint?: string;

  constructor(code: ErrorCode, message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'DbcrateError';
    this.code = code;
    this.hint = opts.hint;
  }

  get exitCode(): number {
    return ExitCodes[this.code] ?? 1;
  }
}

/** Whether `v` is one of the stable codes (e.g. a `code` read off an unknown error). */
export function isErrorCode(v: unknown): v is ErrorCode {
  return typeof v === 'string' && (Object.values(ErrorCodes) as string[]).includes(v);
}

export function isDbcrateError(e: unknown): e is DbcrateError {
  return e instanceof DbcrateError;
}

/** Wrap anything thrown into a DbcrateError, keeping typed ones as they are. */
export function toDbcrateError(e: unknown, fallback: ErrorCode = ErrorCodes.INTERNAL): DbcrateError {
  if (e instanceof DbcrateError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new DbcrateError(fallback, message, { cause: e });
}
