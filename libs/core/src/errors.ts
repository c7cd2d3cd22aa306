import { ERROR_CODE_VALUES } from './gen/dbcrate/v1/errors_codes';

/**
 * Typed errors with stable codes. Every layer throws these; edges translate them (CLI: exit
 * code + one line; HTTP status in the API; term() or nak() on JetStream). The codes' names
 * are declared once, in proto/dbcrate/v1/errors.proto (enum ErrorCode).
 */
type CodeName = Exclude<keyof typeof ERROR_CODE_VALUES, 'UNSPECIFIED'>;
export type ErrorCode = `E_${CodeName}`;

/** ErrorCodes.USAGE === 'E_USAGE', … : one per value of the proto enum. */
export const ErrorCodes: { readonly [K in CodeName]: `E_${K}` } = Object.freeze(
  Object.fromEntries(
    Object.keys(ERROR_CODE_VALUES)
      .filter((k) => k !== 'UNSPECIFIED')
      .map((k) => [k, `E_${k}`]),
  ) as { [K in CodeName]: `E_${K}` },
);

/** The code's number on the wire (dbcrate.v1.ErrorCode), and back (unknown: E_INTERNAL). */
export function errorCodeNumber(code: ErrorCode): number {
  return ERROR_CODE_VALUES[code.slice(2) as CodeName];
}
export function errorCodeFromNumber(value: number): ErrorCode {
  const name = (Object.keys(ERROR_CODE_VALUES) as (keyof typeof ERROR_CODE_VALUES)[]).find(
    (k) => ERROR_CODE_VALUES[k] === value,
  );
  return name && name !== 'UNSPECIFIED' ? `E_${name}` : 'E_INTERNAL';
}

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
