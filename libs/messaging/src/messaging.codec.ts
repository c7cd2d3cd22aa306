import { fromBinary, toBinary, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { SCHEMA_HEADER } from '@dbcrate/contracts';
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';

/** A message that can never be handled as it is: terminated (not retried) and dead-lettered. */
export class MalformedMessage extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'MalformedMessage';
  }
}

/** Bytes and headers for `message`, its schema named in the Dbcrate-Schema header. */
export function encode<D extends DescMessage>(
  schema: D,
  message: MessageShape<D>,
  extra: Record<string, string> = {},
): { data: Uint8Array; headers: MsgHdrs } {
  const h = natsHeaders();
  h.set(SCHEMA_HEADER, schema.typeName);
  for (const [k, v] of Object.entries(extra)) h.set(k, v);
  return { data: toBinary(schema, message), headers: h };
}

/**
 * The message in `data`, which must be of one of `schemas` (by its header). A missing or
 * unknown schema (another version: dbcrate.v2.Job) or bytes that do not parse are
 * MalformedMessage, with the reason a dead letter records.
 */
export function decode<D extends DescMessage>(
  schemas: readonly D[],
  data: Uint8Array,
  headers: MsgHdrs | undefined,
): { schema: D; message: MessageShape<D> } {
  const name = headers?.get(SCHEMA_HEADER) ?? '';
  if (!name) throw new MalformedMessage(`no ${SCHEMA_HEADER} header`);
  const schema = schemas.find((s) => s.typeName === name);
  if (!schema) {
    throw new MalformedMessage(
      `schema ${name} is not one this consumer reads (${schemas.map((s) => s.typeName).join(', ')})`,
    );
  }
  try {
    return { schema, message: fromBinary(schema, data) };
  } catch (e) {
    throw new MalformedMessage(`not a valid ${name}: ${(e as Error).message}`);
  }
}
