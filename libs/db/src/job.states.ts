/**
 * A job's life: queued (recorded) → dispatched (on its agent's subject) → running (the agent
 * said so) → succeeded | failed. A firing for an offline agent is skipped; a job whose agent
 * never reports by its deadline is failed. Retries of a failed attempt go back to dispatched.
 */
export type JobState = 'queued' | 'dispatched' | 'running' | 'succeeded' | 'failed' | 'skipped';

const NEXT: Record<JobState, readonly JobState[]> = {
  queued: ['dispatched', 'skipped', 'failed'],
  dispatched: ['running', 'succeeded', 'failed'],
  running: ['running', 'succeeded', 'failed', 'dispatched'],
  succeeded: [],
  failed: ['dispatched'],
  skipped: [],
};

export function canMove(from: JobState, to: JobState): boolean {
  return NEXT[from].includes(to);
}

export const FINAL_STATES: readonly JobState[] = ['succeeded', 'skipped'];
