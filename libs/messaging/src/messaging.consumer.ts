import { create, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { DeadLetterSchema } from '@dbcrate/contracts';
import { logger, redact, runInScope, type Logger } from '@dbcrate/core';
import {
  AckPolicy,
  jetstream,
  jetstreamManager,
  type ConsumerMessages,
  type JsMsg,
} from '@nats-io/jetstream';
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
    // One more than the worker's own limit: the worker dead-letters on its last delivery, and
    // the server still redelivers one that a crashed worker never answered.
    max_deliver: (spec.maxDeliver ?? DEFAULTS.maxDeliver) + 1,
    max_ack_pending: Math.max(64, (spec.concurrency ?? 1) * 4),
  };
  const existing = await jsm.consumers.info(spec.stream, spec.durable).catch((e: unknown) => {
    if (isNotFound(e)) return undefined;
    throw e;
  });
  if (existing) await jsm.consumers.update(spec.stream, spec.durable, cfg);
  else
    await jsm.consumers.add(spec.stream, cfg).catch(async (e: unknown) => {
      if (!(await jsm.consumers.info(spec.stream, spec.durable).catch(() => undefined))) throw e;
    });
}

/**
 * A worker on one durable consumer: each message decoded by its schema and handed to the
 * handler in its own work scope, its lease kept alive (working()) while the handler runs, then
 * acknowledged (and the ack confirmed by the server), nak'ed with backoff on a transient
 * failure, or terminated and dead-lettered when it can never succeed: malformed, of an
 * unknown schema, failed permanently, or failed on its last allowed delivery.
 */
export class JetStreamWorker<D extends DescMessage> {
  private messages?: ConsumerMessages;
  private readonly stopping = new AbortController();
  private loop?: Promise<void>;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly leases = new Set<NodeJS.Timeout>();
  private readonly log: Logger;

  constructor(
    private readonly nc: NatsConnection,
    private readonly spec: ConsumerSpec<D>,
    private readonly handler: Handler<D>,
    opts: { logger?: Logger } = {},
  ) {
    this.log = (opts.logger ?? logger()).child({ stream: spec.stream, consumer: spec.durable });
  }

  async start(): Promise<void> {
    if (this.loop) throw new Error('JetStreamWorker.start() called twice');
    await ensureConsumer(this.nc, this.spec);
    const consumer = await jetstream(this.nc).consumers.get(this.spec.stream, this.spec.durable);
    const concurrency = this.spec.concurrency ?? DEFAULTS.concurrency;
    const messages = await consumer.consume({ max_messages: concurrency });
    this.messages = messages;
    this.loop = (async () => {
      for await (const m of messages) {
        const task = this.handle(m).finally(() => this.inFlight.delete(task));
        this.inFlight.add(task);
        if (this.inFlight.size >= concurrency) await Promise.race(this.inFlight);
      }
    })();
  }

  /**
   * Stop taking messages. Handlers still running are told to stop (their signal) and given
   * `graceMs` to finish; then their leases lapse and the server redelivers their messages.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping.abort();
    // On a connection already gone, closing the subscription or ending the loop may never
    // settle: none of it is waited for longer than the grace period.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled([this.messages?.close(), this.loop, ...this.inFlight]),
      new Promise((r) => (timer = setTimeout(r, graceMs))),
    ]);
    clearTimeout(timer);
    for (const l of this.leases) clearInterval(l);
    this.leases.clear();
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
      if (this.stopping.signal.aborted) return; // left for redelivery to another worker
      const reason = redact((e as Error).message ?? String(e));
      const maxDeliver = this.spec.maxDeliver ?? DEFAULTS.maxDeliver;
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
        msgID: `${this.spec.stream}:${m.info.streamSequence}`,
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
