import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DbcrateError } from '@dbcrate/core';
import { VerifyStream } from './verify.stream';

const data = Buffer.from('the bytes that were stored, exactly');
const sha256 = createHash('sha256').update(data).digest('hex');

async function run(
  input: Buffer,
  expected: { sha256: string; size: number },
): Promise<{ out: Buffer; ended: boolean }> {
  const chunks: Buffer[] = [];
  let ended = false;
  const sink = new Writable({
    write(c, _e, cb) {
      chunks.push(c);
      cb();
    },
    final(cb) {
      ended = true;
      cb();
    },
  });
  await pipeline(
    Readable.from([input.subarray(0, 5), input.subarray(5)]),
    new VerifyStream({ ...expected, key: 'k' }),
    sink,
  );
  return { out: Buffer.concat(chunks), ended };
}

describe('VerifyStream', () => {
  it('passes matching bytes through and ends', async () => {
    const r = await run(data, { sha256, size: data.length });
    expect(r.out.equals(data)).toBe(true);
    expect(r.ended).toBe(true);
  });

  it('never lets the end through for a changed byte', async () => {
    const bad = Buffer.from(data);
    bad[3] ^= 1;
    await expect(run(bad, { sha256, size: data.length })).rejects.toThrow(/sha256/);
  });

  it('refuses a truncated or longer object', async () => {
    await expect(run(data.subarray(0, 10), { sha256, size: data.length })).rejects.toThrow(/truncated/);
    await expect(
      run(Buffer.concat([data, Buffer.from('x')]), { sha256, size: data.length }),
    ).rejects.toBeInstanceOf(DbcrateError);
  });
});
