import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { checkReachedEnd } from './recover.flow';

describe('recover --latest: replay must reach the end of the contiguous archived WAL', () => {
  const plan = ['000000010000000000000002', '000000010000000000000003', '000000020000000000000004'];

  it('stopping short (restore_command failed as if a file were missing) is an error, not exit 0', () => {
    let err: unknown;
    try {
      checkReachedEnd(plan, { kind: 'latest' }, { lastSegmentRestored: '000000010000000000000003' }, '/d');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DbcrateError);
    expect((err as DbcrateError).code).toBe(ErrorCodes.RECOVERY_FAILED);
    expect((err as DbcrateError).message).toMatch(/short of 000000020000000000000004/);
  });

  it('reaching the last planned segment (on any timeline) passes; other targets are PostgreSQL’s to check', () => {
    expect(() =>
      checkReachedEnd(plan, { kind: 'latest' }, { lastSegmentRestored: '000000020000000000000004' }, '/d'),
    ).not.toThrow();
    expect(() => checkReachedEnd(plan, { kind: 'immediate' }, {}, '/d')).not.toThrow();
  });
});
