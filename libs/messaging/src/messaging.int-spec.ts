import { randomBytes } from 'node:crypto';
import { create, fromBinary } from '@bufbuild/protobuf';
import {
  DeadLetterSchema,
  JobSchema,
  SCHEMA_HEADER,
  topology,
  type DeadLetter,
  type Job,
} from '@dbcrate/contracts';
import { Writable } from 'node:stream';
import { createLogger, DbcrateError, ErrorCodes, type Logger } from '@dbcrate/core';
import { headers as natsHeaders, type NatsConnection } from '@nats-io/nats-core';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { ensureConsumer, JetStreamWorker, type ConsumerSpec } from './messaging.consumer';
import { publishMessage } from './messaging.publish';
import { provisionStreams } from './messaging.topology';

// The machine's NATS with JetStream; every run in its own namespace (subjects and streams).
const NATS = process.env.DBCRATE_TEST_NATS ?? '127.0.0.1:4222';
const t = topology(`t${randomBytes(4).toString('hex')}`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  ms = 20_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('messaging on JetStream (the machine’s NATS)', () => {
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  const workers: JetStreamWorker<typeof JobSchema>[] = [];

  beforeAll(async () => {
    nc = await connect({ servers: NATS, name: 'dbcrate-messaging-test' });
    jsm = await jetstreamManager(nc);
    await provisionStreams(jsm, t);
  });
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
  });
  afterAll(async () => {
    for (const s of Object.values(t.streams)) await jsm.streams.delete(s).catch(() => undefined);
    await nc?.close();
  });

  const job = (agentId: string, jobId: string): Job =>
    create(JobSchema, { jobId, agentId, orgId: 'org-1', kind: { case: 'probeDestination', value: {} } });
  const spec = (
    agentId: string,
    o: Partial<ConsumerSpec<typeof JobSchema>> = {},
  ): ConsumerSpec<typeof JobSchema> => ({
    stream: t.streams.JOBS,
    durable: `agent-${agentId}`,
    filterSubject: t.subjects.job(agentId),
    schemas: [JobSchema],
    deadLetterSubject: t.subjects.deadLetter(t.streams.JOBS),
    ackWaitMs: 2_000,
    backoffMs: [100],
    ...o,
  });
  const work = async (
    s: ConsumerSpec<typeof JobSchema>,
    handler: (j: Job, n: number) => Promise<void>,
    conn = nc,
    log?: Logger,
  ) => {
    const w = new JetStreamWorker(conn, s, (j, d) => handler(j, d.deliveryCount), { logger: log });
    workers.push(w);
    await w.start();
    return w;
  };
  const pending = async (subject: string) =>
    (await jsm.streams.info(t.streams.JOBS, { subjects_filter: subject })).state.subjects?.[subject] ?? 0;
  const deadLetters = async (): Promise<DeadLetter[]> => {
    const last = (await jsm.streams.info(t.streams.DEAD_LETTERS)).state.last_seq;
    const out: DeadLetter[] = [];
    for (let seq = 1; seq <= last; seq++) {
      const m = await jsm.streams.getMessage(t.streams.DEAD_LETTERS, { seq }).catch(() => null);
      if (m) out.push(fromBinary(DeadLetterSchema, m.data));
    }
    return out;
  };
  const letterFor = (subject: string) =>
    until(`a dead letter from ${subject}`, async () =>
      (await deadLetters()).find((d) => d.subject === subject),
    );

  it('provisions its streams idempotently (a second start, another replica)', async () => {
    await provisionStreams(jsm, t);
    await Promise.all([provisionStreams(jsm, t), provisionStreams(jsm, t)]);
    const jobs = await jsm.streams.info(t.streams.JOBS);
    expect(jobs.config.retention).toBe('workqueue');
    expect(jobs.config.subjects).toEqual([t.subjects.allJobs]);
  });

  it('stores a job published twice under one message id once', async () => {
    const subject = t.subjects.job('dedupe');
    const first = await publishMessage(nc, subject, JobSchema, job('dedupe', 'j1'), { msgID: 'j1' });
    const second = await publishMessage(nc, subject, JobSchema, job('dedupe', 'j1'), { msgID: 'j1' });
    expect(first.duplicate).toBe(false);
    expect(second.duplicate).toBe(true);
    expect(await pending(subject)).toBe(1);
  });

  it('hands a job to its handler, then acknowledges it (the work queue forgets it)', async () => {
    const subject = t.subjects.job('ok');
    const seen: string[] = [];
    await work(spec('ok'), async (j) => void seen.push(j.jobId));
    await publishMessage(nc, subject, JobSchema, job('ok', 'job-ok'), { msgID: 'job-ok' });
    await until('the handler', () => seen.length === 1);
    await until('the ack', async () => (await pending(subject)) === 0);
    expect(seen).toEqual(['job-ok']);
  });

  it('terminates a malformed message or one of an unknown version and dead-letters it with the reason', async () => {
    const subject = t.subjects.job('bad');
    const calls: string[] = [];
    const logged: string[] = [];
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        logged.push(c.toString());
        cb();
      },
    });
    await work(spec('bad'), async (j) => void calls.push(j.jobId), nc, createLogger({ destination: sink }));
    const js = jetstream(nc);
    await js.publish(subject, new Uint8Array([1, 2, 3]), { msgID: 'no-header' });
    const v2 = natsHeaders();
    v2.set(SCHEMA_HEADER, 'dbcrate.v2.Job');
    await js.publish(subject, new Uint8Array(), { msgID: 'v2', headers: v2 });
    const garbage = natsHeaders();
    garbage.set(SCHEMA_HEADER, JobSchema.typeName);
    await js.publish(subject, new Uint8Array([0xff, 0xff, 0xff]), { msgID: 'garbage', headers: garbage });
    const letters = await until('three dead letters', async () => {
      const l = (await deadLetters()).filter((d) => d.subject === subject);
      return l.length === 3 ? l : undefined;
    });
    expect(letters.map((l) => l.reason).sort()).toEqual([
      expect.stringMatching(/^no Dbcrate-Schema header/),
      expect.stringMatching(/^not a valid dbcrate\.v1\.Job/),
      expect.stringMatching(/^schema dbcrate\.v2\.Job is not one this consumer reads/),
    ]);
    expect(letters.every((l) => l.deliveries === 1)).toBe(true);
    // …and says why in the log.
    const records = logged.map((l) => JSON.parse(l) as { msg: string; reason?: string; subject?: string });
    const said = records.filter((r) => r.msg === 'message dead-lettered' && r.subject === subject);
    expect(said.map((r) => r.reason).sort()).toEqual(letters.map((l) => l.reason).sort());
    // Terminated: never delivered again (past the ack wait and the backoff).
    await sleep(2_500);
    expect((await deadLetters()).filter((d) => d.subject === subject)).toHaveLength(3);
    expect(calls).toEqual([]);
  });

  it('retries a transient failure after its backoff, and acknowledges the success', async () => {
    const subject = t.subjects.job('flaky');
    const deliveries: number[] = [];
    await work(spec('flaky'), async (_j, n) => {
      deliveries.push(n);
      if (n === 1) throw new DbcrateError(ErrorCodes.STORAGE_UNREACHABLE, 'bucket down');
    });
    await publishMessage(nc, subject, JobSchema, job('flaky', 'job-flaky'), { msgID: 'job-flaky' });
    await until(
      'the second delivery to succeed',
      async () => deliveries.length === 2 && (await pending(subject)) === 0,
    );
    expect(deliveries).toEqual([1, 2]);
  });

  it('dead-letters a job that fails permanently at once, and one that keeps failing after max-deliver', async () => {
    const perm = t.subjects.job('perm');
    const permCalls: number[] = [];
    await work(spec('perm'), async (_j, n) => {
      permCalls.push(n);
      throw new DbcrateError(ErrorCodes.KEY_INVALID, 'not a key');
    });
    await publishMessage(nc, perm, JobSchema, job('perm', 'job-perm'), { msgID: 'job-perm' });
    expect((await letterFor(perm)).reason).toMatch(/^failed permanently: not a key/);
    expect(permCalls).toEqual([1]);

    const always = t.subjects.job('always');
    const calls: number[] = [];
    await work(spec('always', { maxDeliver: 3 }), async (_j, n) => {
      calls.push(n);
      throw new DbcrateError(ErrorCodes.STORAGE_UNREACHABLE, 'still down');
    });
    await publishMessage(nc, always, JobSchema, job('always', 'job-always'), { msgID: 'job-always' });
    const letter = await letterFor(always);
    expect(letter.reason).toBe('failed 3 times, the last: still down');
    expect(calls).toEqual([1, 2, 3]);
    expect(fromBinary(JobSchema, letter.payload).jobId).toBe('job-always');
    await sleep(500);
    expect(calls).toEqual([1, 2, 3]);
  });

  it('dead-letters a job whose deliveries all ended in silence (its worker died each time), without running it', async () => {
    const subject = t.subjects.job('silent');
    const s = spec('silent', { maxDeliver: 2, ackWaitMs: 500 });
    await ensureConsumer(nc, s);
    await publishMessage(nc, subject, JobSchema, job('silent', 'job-silent'), { msgID: 'job-silent' });
    const c = await jetstream(nc).consumers.get(t.streams.JOBS, s.durable);
    // Taken twice, answered never: as a worker that crashes inside the job each time.
    expect((await c.next({ expires: 5_000 }))?.info.deliveryCount).toBe(1);
    expect((await c.next({ expires: 5_000 }))?.info.deliveryCount).toBe(2);
    const ran: number[] = [];
    await work(s, async (_j, n) => void ran.push(n));
    const letter = await letterFor(subject);
    expect(letter.reason).toBe('delivered 2 times without an answer (its worker died or hung each time)');
    expect(letter.consumer).toBe(s.durable);
    expect(fromBinary(JobSchema, letter.payload).jobId).toBe('job-silent');
    expect(ran).toEqual([]);
  });

  it('keeps consuming when a handler throws something that is not an Error, and stops cleanly', async () => {
    const subject = t.subjects.job('odd');
    const seen: string[] = [];
    const w = await work(spec('odd', { concurrency: 2 }), async (j) => {
      seen.push(j.jobId);
      if (j.jobId === 'odd-1') throw undefined;
    });
    await publishMessage(nc, subject, JobSchema, job('odd', 'odd-1'), { msgID: 'odd-1' });
    await publishMessage(nc, subject, JobSchema, job('odd', 'odd-2'), { msgID: 'odd-2' });
    await until('both jobs', () => seen.includes('odd-1') && seen.includes('odd-2'));
    await until('odd-1 again after its backoff', () => seen.filter((x) => x === 'odd-1').length >= 2);
    await w.stop(1_000);
    expect(await w.done).toEqual({ reason: 'stopped' });
  });

  it('runs each job once with several slots, however long the jobs take', async () => {
    const subject = t.subjects.job('slots');
    const runs: string[] = [];
    await work(spec('slots', { concurrency: 3, ackWaitMs: 1_000 }), async (j) => {
      runs.push(j.jobId);
      await sleep(1_800);
    });
    for (let i = 1; i <= 7; i++)
      await publishMessage(nc, subject, JobSchema, job('slots', `s${i}`), { msgID: `s${i}` });
    await until('all seven', async () => new Set(runs).size === 7 && (await pending(subject)) === 0, 30_000);
    await sleep(1_500);
    expect(runs.slice().sort()).toEqual(['s1', 's2', 's3', 's4', 's5', 's6', 's7']);
  });

  it('keeps the lease of a job that runs longer than the ack wait: delivered once', async () => {
    const subject = t.subjects.job('long');
    const deliveries: number[] = [];
    await work(spec('long', { ackWaitMs: 1_000 }), async (_j, n) => {
      deliveries.push(n);
      await sleep(3_500);
    });
    await publishMessage(nc, subject, JobSchema, job('long', 'job-long'), { msgID: 'job-long' });
    await until(
      'the long job to finish',
      async () => deliveries.length >= 1 && (await pending(subject)) === 0,
      15_000,
    );
    await sleep(1_500);
    expect(deliveries).toEqual([1]);
  });

  it('redelivers the job of a worker that died in the middle of it, within the ack wait', async () => {
    const subject = t.subjects.job('dies');
    const other = await connect({ servers: NATS, name: 'dbcrate-messaging-test-dying' });
    let started!: () => void;
    const inFirst = new Promise<void>((r) => (started = r));
    await work(
      spec('dies', { ackWaitMs: 1_500 }),
      async () => {
        started();
        await new Promise(() => undefined); // never finishes: its process dies
      },
      other,
    );
    await publishMessage(nc, subject, JobSchema, job('dies', 'job-dies'), { msgID: 'job-dies' });
    await inFirst;
    const diedAt = Date.now();
    await other.close(); // the agent's connection is gone; nothing acks or extends the lease
    const dead = workers.splice(0);
    const second: number[] = [];
    await work(spec('dies', { ackWaitMs: 1_500 }), async (_j, n) => void second.push(n));
    await until('the redelivery', () => second.length === 1, 10_000);
    expect(second).toEqual([2]);
    expect(Date.now() - diedAt).toBeLessThan(6_000);
    // The dead worker says why it stopped consuming (its owner restarts or exits).
    expect(await dead[0].done).toMatchObject({ reason: 'connection-closed' });
    await Promise.all(dead.map((w) => w.stop(100)));
  });
});
