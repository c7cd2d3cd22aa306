import { create, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { DeadLetterSchema } from '@dbcrate/contracts';
import { logger, redact, runInScope, type Logger } from '@dbcrate/core';
import { AckPolicy, jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream';
import { nanos, type NatsConnection } from '@nats-io/nats-core';
import { decode, encode, MalformedMessage } from './messaging.codec';
import { backoffFor, isRetryable } from './messaging.retry';
import { isNotFound } from './messaging.topology';

export interface ConsumerSpec<D extends DescMessage> {
  stream: string;
  /** The durable consumer's name: every replica of a service uses the same one. */
  durable: string;
  filterSubject: string;
  /** The schemas this consumer reads (by the Dbcrate-Schema header). */
  schemas: readonly D[];
  /** Where messages that cannot be handled go, with the reason. */
  deadLetterSubject: string;
  /** A delivery not acknowledged (nor kept alive with working()) for this long is redelivered. */
  ackWaitMs?: number;
  /** Deliveries before a message that keeps failing is dead-lettered. */
  maxDeliver?: number;
  /** Delays before the 2nd, 3rd, … delivery after a transient failure. */
  backoffMs?: number[];
  /** Messages handled at once by one worker. */
  concurrency?: number;
}

export interface Delivery<D extends DescMessage> {
  schema: D;
  subject: string;
  streamSequence: number;
  deliveryCount: number;
  /** Set when the worker stops: a handler should stop and leave the message for redelivery. */
  signal: AbortSignal;
}

export type Handler<D extends DescMessage> = (
  message: MessageShape<D>,
  delivery: Delivery<D>,
) => Promise<void>;

const DEFAULTS = {
  ackWaitMs: 30_000,
  maxDeliver: 5,
  backoffMs: [1_000, 5_000, 30_000, 120_000],
  concurrency: 1,
};

/** Create the durable pull consumer, or bring it to this configuration: safe at every start. */
export async function ensureConsumer<D extends DescMessage>(
  nc: NatsConnection,
  spec: ConsumerSpec<D>,
): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const cfg = {
    durable_name: spec.durable,
    ack_policy: AckPolicy.Explicit,
    filter_subject: spec.filterSubject,
    ack_wait: nanos(spec.ackWaitMs ?? DEFAULTS.ackWaitMs),
    // Unlimited on the server: the worker counts deliveries itself and dead-letters a message
    // delivered more than maxDeliver times without running it, also one whose every delivery
    // died with its worker (the server, at its limit, would strand it unseen instead).
    max_deliver: -1,
    max_ack_pending: Math.max(64, (spec.concurrency ?? 1) * 4),
  };
  const existing = await jsm.consumers.info(spec.stream, spec.durable).catch((e: unknown) => {
    if (isNotFound(e)) return undefined;
    throw e;
  });
  if (existing) {
    await jsm.consumers.update(spec.stream, spec.durable, cfg);
    return;
  }
  await jsm.consumers.add(spec.stream, cfg).catch(async (e: unknown) => {
    // Another starter made it between the look and the add: bring it to this configuration.
    if (!(await jsm.consumers.info(spec.stream, spec.durable).catch(() => undefined))) throw e;
    await jsm.consumers.update(spec.stream, spec.durable, cfg);
  });
}

/** Why a worker stopped consuming: stop() was called, or its connection closed for good. */
export type WorkerEnd = { reason: 'stopped' } | { reason: 'connection-closed'; error?: string };

/**
 * A worker on one durable consumer: `concurrency` slots, each pulling one message only when
 * it is free (a message waiting in a client buffer would have no lease), decoding it by its
 * schema and handing it to the handler in its own work scope, its lease kept alive
 * (working()) while the handler runs; then acknowledged (the ack confirmed by the server),
 * nak'ed with backoff on a transient failure, or terminated and dead-lettered when it can
 * never succeed: malformed, of an unknown schema, failed permanently, or delivered more than
 * maxDeliver times. `done` settles when the worker stops consuming, with the reason.
 */
export class JetStreamWorker<D extends DescMessage> {
  private readonly stopping = new AbortController();
  private slots: Promise<void>[] = [];
  private readonly leases = new Set<NodeJS.Timeout>();
  private readonly log: Logger;
  private ended?: (end: WorkerEnd) => void;
  readonly done: Promise<WorkerEnd> = new Promise((r) => (this.ended = r));

  constructor(
    private readonly nc: NatsConnection,
    private readonly spec: ConsumerSpec<D>,
    private readonly handler: Handler<D>,
    opts: { logger?: Logger } = {},
  ) {
    this.log = (opts.logger ?? logger()).child({ stream: spec.stream, consumer: spec.durable });
  }

  async start(): Promise<void> {
    if (this.slots.length) throw new Error('JetStreamWorker.start() called twice');
    await ensureConsumer(this.nc, this.spec);
    const concurrency = Math.max(1, this.spec.concurrency ?? DEFAULTS.concurrency);
    this.slots = Array.from({ length: concurrency }, () => this.slot());
    // A connection closed for good (reconnects exhausted) ends the worker even while its
    // handlers still run: their messages go to another worker when their leases lapse.
    void this.nc.closed().then((err) => {
      if (this.stopping.signal.aborted) return;
      this.log.error(
        { err: err?.message },
        'the NATS connection closed for good: this worker consumes no more',
      );
      this.ended?.({ reason: 'connection-closed', error: err?.message });
    });
    void Promise.all(this.slots).then(() => {
      if (this.stopping.signal.aborted) this.ended?.({ reason: 'stopped' });
    });
  }

  private async slot(): Promise<void> {
    const js = jetstream(this.nc);
    while (!this.stopping.signal.aborted) {
      if (this.nc.isClosed()) return; // `done` says so (start())
      let m: JsMsg | null;
      try {
        const consumer = await js.consumers.get(this.spec.stream, this.spec.durable);
        m = await consumer.next({ expires: 5_000 });
      } catch (e) {
        if (this.stopping.signal.aborted || this.nc.isClosed()) continue;
        this.log.warn({ err: errorText(e) }, 'cannot pull from the consumer; trying again');
        if (isNotFound(e)) await ensureConsumer(this.nc, this.spec).catch(() => undefined);
        await sleep(1_000, this.stopping.signal);
        continue;
      }
      if (!m) continue;
      if (this.stopping.signal.aborted) {
        m.nak(); // taken just as the worker stops: another one gets it at once
        break;
      }
      await this.handle(m).catch((e: unknown) =>
        this.log.error({ err: errorText(e) }, 'a message was left unanswered after an internal error'),
      );
    }
  }

  /**
   * Stop pulling. Handlers still running are told to stop (their signal) and given `graceMs`
   * to finish; a message they leave is nak'ed, or its lease lapses, and another worker gets it.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(this.slots),
      new Promise((r) => (timer = setTimeout(r, graceMs))),
    ]);
    clearTimeout(timer);
    for (const l of this.leases) clearInterval(l);
    this.leases.clear();
    this.ended?.({ reason: 'stopped' });
  }

  private async handle(m: JsMsg): Promise<void> {
    const info = m.info;
    const log = this.log.child({
      subject: m.subject,
      seq: info.streamSequence,
      delivery: info.deliveryCount,
    });
    let decoded: { schema: D; message: MessageShape<D> };
    try {
      decoded = decode(this.spec.schemas, m.data, m.headers);
    } catch (e) {
      await this.deadLetter(m, (e as MalformedMessage).message, log);
      return;
    }
    const maxDeliver = this.spec.maxDeliver ?? DEFAULTS.maxDeliver;
    if (info.deliveryCount > maxDeliver) {
      // Its earlier deliveries ended in silence (the worker died or hung each time).
      await this.deadLetter(
        m,
        `delivered ${info.deliveryCount - 1} times without an answer (its worker died or hung each time)`,
        log,
      );
      return;
    }
    const ackWait = this.spec.ackWaitMs ?? DEFAULTS.ackWaitMs;
    const lease = setInterval(() => m.working(), Math.max(100, Math.floor(ackWait / 3)));
    this.leases.add(lease);
    const release = () => {
      clearInterval(lease);
      this.leases.delete(lease);
    };
    try {
      await runInScope({ logger: log }, () =>
        this.handler(decoded.message, {
          schema: decoded.schema,
          subject: m.subject,
          streamSequence: info.streamSequence,
          deliveryCount: info.deliveryCount,
          signal: this.stopping.signal,
        }),
      );
      release();
      if (!(await m.ackAck().catch(() => false)))
        log.warn('the server did not confirm the ack; the message may come again');
    } catch (e) {
      release();
      if (this.stopping.signal.aborted) {
        m.nak(); // stopped in the middle: another worker takes it at once
        return;
      }
      const reason = redact(errorText(e));
      if (!isRetryable(e)) {
        await this.deadLetter(m, `failed permanently: ${reason}`, log);
      } else if (info.deliveryCount >= maxDeliver) {
        await this.deadLetter(m, `failed ${info.deliveryCount} times, the last: ${reason}`, log);
      } else {
        const delay = backoffFor(info.deliveryCount, this.spec.backoffMs ?? DEFAULTS.backoffMs);
        log.warn({ err: reason, retryInMs: delay }, 'handling failed; it will be delivered again');
        m.nak(delay);
      }
    }
  }

  /** Copy to the dead-letter stream (stored once per stream sequence), then terminate. */
  private async deadLetter(m: JsMsg, reason: string, log: Logger): Promise<void> {
    const hdrs: Record<string, string> = {};
    for (const k of m.headers?.keys() ?? []) hdrs[k] = m.headers!.get(k);
    const letter = create(DeadLetterSchema, {
      subject: m.subject,
      reason,
      stream: this.spec.stream,
      consumer: this.spec.durable,
      streamSequence: BigInt(m.info.streamSequence),
      deliveries: m.info.deliveryCount,
      payload: m.data,
      headers: hdrs,
      at: timestampFromDate(new Date()),
    });
    try {
      const { data, headers } = encode(DeadLetterSchema, letter);
      await jetstream(this.nc).publish(this.spec.deadLetterSubject, data, {
        headers,
        // One letter per message and consumer: two consumers of one stream each keep theirs.
        msgID: `${this.spec.stream}:${this.spec.durable}:${m.info.streamSequence}`,
      });
    } catch (e) {
      // Not stored as a dead letter: keep the message rather than lose it.
      log.error(
        { err: (e as Error).message, reason },
        'cannot write the dead letter; the message will be delivered again',
      );
      m.nak(5_000);
      return;
    }
    log.error({ reason }, 'message dead-lettered');
    m.term(reason);
  }
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : typeof e === 'string' ? e : `a non-error was thrown: ${String(e)}`;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((r) => {
    const t = setTimeout(r, ms);
    signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
  });
}
