import { create } from '@bufbuild/protobuf';
import { EventSchema, JobSchema, SCHEMA_HEADER } from '@dbcrate/contracts';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { decode, encode, MalformedMessage } from './messaging.codec';
import { backoffFor, isRetryable } from './messaging.retry';

describe('messaging codec', () => {
  it('names the schema in a header and reads it back', () => {
    const job = create(JobSchema, { jobId: 'j1', kind: { case: 'probeDestination', value: {} } });
    const { data, headers } = encode(JobSchema, job);
    expect(headers.get(SCHEMA_HEADER)).toBe('dbcrate.v1.Job');
    const back = decode([JobSchema], data, headers);
    expect(back.schema).toBe(JobSchema);
    expect(back.message.jobId).toBe('j1');
  });

  it('refuses a message of another schema than the consumer reads', () => {
    const { data, headers } = encode(EventSchema, create(EventSchema, { eventId: 'e1' }));
    expect(() => decode([JobSchema], data, headers)).toThrow(MalformedMessage);
    expect(() => decode([JobSchema], data, undefined)).toThrow(/no Dbcrate-Schema header/);
  });
});

describe('retry rules', () => {
  it('retries what another delivery may fix, never what it cannot', () => {
    expect(isRetryable(new DbcrateError(ErrorCodes.STORAGE_UNREACHABLE, 'down'))).toBe(true);
    expect(isRetryable(new DbcrateError(ErrorCodes.DB_UNREACHABLE, 'down'))).toBe(true);
    expect(isRetryable(new Error('a bug'))).toBe(true);
    expect(isRetryable(new DbcrateError(ErrorCodes.WRONG_KEY, 'no'))).toBe(false);
    expect(isRetryable(new DbcrateError(ErrorCodes.UNTRUSTED, 'forged'))).toBe(false);
    expect(isRetryable(new MalformedMessage('junk'))).toBe(false);
  });

  it('backs off per delivery, holding the last delay', () => {
    const b = [1_000, 5_000, 30_000];
    expect([1, 2, 3, 4, 9].map((n) => backoffFor(n, b))).toEqual([1_000, 5_000, 30_000, 30_000, 30_000]);
    expect(backoffFor(1, [])).toBe(0);
  });
});
