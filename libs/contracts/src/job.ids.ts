import { createHash } from 'node:crypto';

/**
 * The id of a scheduled firing: the same schedule and fire time give the same id on every
 * scheduler replica, and the id is the job message's NATS message id, so the jobs stream
 * stores a firing once however many replicas publish it.
 */
export function scheduledJobId(scheduleId: string, fireTime: Date): string {
  const t = fireTime.getTime();
  if (!Number.isFinite(t)) throw new Error('scheduledJobId: invalid fire time');
  const digest = createHash('sha256').update(`${scheduleId}\n${t}`).digest('hex').slice(0, 24);
  return `job-${digest}`;
}
