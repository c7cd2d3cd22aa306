import type { DescMessage, MessageShape } from '@bufbuild/protobuf';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/nats-core';
import { encode } from './messaging.codec';

/**
 * Publish `message` to a stream and wait for the server to store it. `msgID` makes a second
 * publish of the same thing (a retry, another replica) a no-op: `duplicate` tells.
 */
export async function publishMessage<D extends DescMessage>(
  nc: NatsConnection,
  subject: string,
  schema: D,
  message: MessageShape<D>,
  opts: { msgID: string; timeoutMs?: number },
): Promise<{ stream: string; seq: number; duplicate: boolean }> {
  const { data, headers } = encode(schema, message);
  const ack = await jetstream(nc).publish(subject, data, {
    headers,
    msgID: opts.msgID,
    timeout: opts.timeoutMs ?? 10_000,
  });
  return { stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate };
}
