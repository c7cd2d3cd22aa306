import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { DeadLetterSchema, type Topology } from '@dbcrate/contracts';
import { logger, type Logger } from '@dbcrate/core';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/nats-core';
import { encode } from './messaging.codec';

/** The advisory JetStream sends when a message ran out of deliveries. */
interface MaxDeliveriesAdvisory {
  stream: string;
  consumer: string;
  stream_seq: number;
  deliveries: number;
}

/**
 * A worker dead-letters what it fails to handle; a message whose deliveries all ended in
 * silence (its worker died or hung each time) reaches no worker's error path. The server
 * then stops delivering it and says so in an advisory: this copies such messages to the
 * dead-letter stream, under the same message id a worker would use (stored once), so none
 * is stranded unseen. Runs in the control plane (it needs to read streams by sequence).
 */
export class DeadLetterKeeper {
  private subs: Subscription[] = [];
  private readonly log: Logger;

  constructor(
    private readonly nc: NatsConnection,
    private readonly t: Topology,
    opts: { logger?: Logger } = {},
  ) {
    this.log = (opts.logger ?? logger()).child({ component: 'dead-letters' });
  }

  start(streams: string[] = [this.t.streams.JOBS, this.t.streams.REPORTS, this.t.streams.EVENTS]): void {
    for (const stream of streams) {
      const sub = this.nc.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${stream}.*`);
      this.subs.push(sub);
      void (async () => {
        for await (const m of sub) {
          await this.keep(m.json<MaxDeliveriesAdvisory>()).catch((e: unknown) =>
            this.log.error(
              { err: (e as Error).message, stream },
              'cannot dead-letter a message out of deliveries',
            ),
          );
        }
      })();
    }
  }

  stop(): void {
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
  }

  private async keep(a: MaxDeliveriesAdvisory): Promise<void> {
    const jsm = await jetstreamManager(this.nc);
    const stored = await jsm.streams.getMessage(a.stream, { seq: a.stream_seq });
    if (!stored) return; // acknowledged (and removed) meanwhile, or expired
    const hdrs: Record<string, string> = {};
    for (const k of stored.header?.keys() ?? []) hdrs[k] = stored.header.get(k);
    const reason = `delivered ${a.deliveries} times without an answer (consumer ${a.consumer}: its worker died or hung each time)`;
    const { data, headers } = encode(
      DeadLetterSchema,
      create(DeadLetterSchema, {
        subject: stored.subject,
        reason,
        stream: a.stream,
        streamSequence: BigInt(a.stream_seq),
        deliveries: a.deliveries,
        payload: stored.data,
        headers: hdrs,
        at: timestampFromDate(new Date()),
      }),
    );
    await jetstream(this.nc).publish(this.t.subjects.deadLetter(a.stream), data, {
      headers,
      msgID: `${a.stream}:${a.stream_seq}`,
    });
    this.log.error({ subject: stored.subject, seq: a.stream_seq, reason }, 'message dead-lettered');
  }
}
