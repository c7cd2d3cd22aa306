import { canMove } from './job.states';

describe('job states', () => {
  it('moves forward only, and a failed attempt may be dispatched again', () => {
    expect(canMove('queued', 'dispatched')).toBe(true);
    expect(canMove('dispatched', 'running')).toBe(true);
    expect(canMove('running', 'succeeded')).toBe(true);
    expect(canMove('failed', 'dispatched')).toBe(true);
    expect(canMove('queued', 'skipped')).toBe(true);
    // A result never revives a finished job, and nothing skips recording.
    expect(canMove('succeeded', 'running')).toBe(false);
    expect(canMove('succeeded', 'failed')).toBe(false);
    expect(canMove('skipped', 'dispatched')).toBe(false);
  });
});
