import { CommanderError } from 'commander';
import { DbcrateError, ErrorCodes, redact, toDbcrateError } from '@dbcrate/core';

/** Translate any error into one or two lines on stderr and an exit code; no stack traces unless asked. */
export function reportError(e: unknown): number {
  if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
  const err: DbcrateError = toDbcrateError(e);
  const write = (s: string) => process.stderr.write(redact(s) + '\n');
  if (err.code === ErrorCodes.INTERNAL) {
    write(`dbcrate: internal error: ${err.message}`);
    write('  this is a bug in dbcrate; rerun with DBCRATE_DEBUG=1 for details and report it');
  } else {
    write(`dbcrate: error: ${err.message} [${err.code}]`);
    if (err.hint) write(`  hint: ${err.hint}`);
  }
  if (process.env.DBCRATE_DEBUG === '1') {
    const cause = (err.cause as Error | undefined)?.stack ?? err.stack ?? '';
    write(cause);
  }
  return err.exitCode;
}
