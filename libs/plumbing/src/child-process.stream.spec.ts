import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { runTool } from './child-process.stream';

// runTool is what backup, restore and basebackup start their tools with; its guard is spawnPgTool's.
describe('runTool', () => {
  it.each([
    ['a URL with a password', 'postgres://u:s3cret@h/d'],
    ['a password= conninfo keyword', 'host=h password=s3cret'],
  ])('refuses %s on the command line, before anything starts', (_what, arg) => {
    let err: unknown;
    try {
      runTool('/bin/echo', ['--dbname', arg], {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DbcrateError);
    expect((err as DbcrateError).code).toBe(ErrorCodes.INTERNAL);
    expect((err as DbcrateError).message).toMatch(/password would appear on its command line/);
    expect((err as DbcrateError).message).not.toContain('s3cret');
  });

  it('a failing tool rejects `exited` and errors its stdout without an unhandled error event', async () => {
    const run = runTool('/bin/sh', ['-c', 'echo oops >&2; exit 4'], {});
    run.stdout.resume(); // a caller that only drains, as a parallel pg_restore's does
    await expect(run.exited).rejects.toMatchObject({ code: ErrorCodes.DB_TOOL_FAILED });
    await new Promise((r) => setImmediate(r));
    expect(run.stdout.destroyed).toBe(true);
  });
});
