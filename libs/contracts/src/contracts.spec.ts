import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { JobSchema } from './index';
import { scheduledJobId } from './job.ids';
import { Subjects, topology } from './subjects';

describe('wire contracts', () => {
  it('a job survives the wire, whatever kind it is', () => {
    const job = create(JobSchema, {
      jobId: 'job-1',
      orgId: 'org-a',
      agentId: 'agent-a',
      kind: {
        case: 'dumpBackup',
        value: { database: { databaseId: 'orders', conninfo: 'host=db dbname=orders' }, compressionLevel: 3 },
      },
    });
    const back = fromBinary(JobSchema, toBinary(JobSchema, job));
    expect(back.kind.case).toBe('dumpBackup');
    expect(back.kind.case === 'dumpBackup' && back.kind.value.database?.databaseId).toBe('orders');
  });

  it('subjects are built from safe tokens only', () => {
    expect(Subjects.job('agent-7')).toBe('dbcrate.v1.jobs.agent-7');
    expect(Subjects.report('agent-7', 'result')).toBe('dbcrate.v1.reports.agent-7.result');
    expect(Subjects.event('org-1', 'backup.ok')).toBe('dbcrate.v1.events.org-1.backup.ok');
    // An id that would widen a subscription or a permission is refused.
    for (const bad of ['a.b', '*', '>', 'a b', '']) expect(() => Subjects.job(bad)).toThrow(/NATS subject/);
    expect(() => Subjects.event('org-1', 'backup.>')).toThrow(/event type/);
  });

  it('a namespace keeps one installation’s subjects and streams apart from another’s', () => {
    const t = topology('t42');
    expect(t.subjects.job('a')).toBe('t42.dbcrate.v1.jobs.a');
    expect(t.streams.JOBS).toBe('T42_DBCRATE_JOBS');
    expect(() => topology('a.b')).toThrow(/namespace/);
    expect(() => topology('AB')).toThrow(/namespace/);
    expect(() => Subjects.report('a', 'x.>' as never)).toThrow(/report kind/);
  });

  it('a scheduled firing has one id on every replica, another for another fire time', () => {
    const t = new Date('2026-12-08T00:00:00Z');
    expect(scheduledJobId('sch-1', t)).toBe(scheduledJobId('sch-1', new Date(t.getTime())));
    expect(scheduledJobId('sch-1', t)).not.toBe(scheduledJobId('sch-1', new Date(t.getTime() + 60_000)));
    expect(scheduledJobId('sch-1', t)).not.toBe(scheduledJobId('sch-2', t));
    expect(scheduledJobId('sch-1', t)).toMatch(/^job-[0-9a-f]{24}$/);
  });
});
