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

  it('holds back the tail until the object is verified: a changed object never reaches downstream whole', async () => {
    const big = Buffer.alloc(10_000, 7);
    const good = createHash('sha256').update(big).digest('hex');
    const forged = Buffer.from(big);
    forged[9_999] = 8;
    const seen: Buffer[] = [];
    const sink = new Writable({
      write(c, _e, cb) {
        seen.push(c);
        cb();
      },
    });
    const chunks = Array.from({ length: 10 }, (_, i) => forged.subarray(i * 1000, (i + 1) * 1000));
    await expect(
      pipeline(
        Readable.from(chunks),
        new VerifyStream({ sha256: good, size: big.length, key: 'k' }, undefined, 3000),
        sink,
      ),
    ).rejects.toBeInstanceOf(DbcrateError);
    const passed = Buffer.concat(seen).length;
    expect(passed).toBeLessThanOrEqual(big.length - 3000);
    const ok: Buffer[] = [];
    await pipeline(
      Readable.from(Array.from({ length: 10 }, (_, i) => big.subarray(i * 1000, (i + 1) * 1000))),
      new VerifyStream({ sha256: good, size: big.length, key: 'k' }, undefined, 3000),
      new Writable({
        write(c, _e, cb) {
          ok.push(c);
          cb();
        },
      }),
    );
    expect(Buffer.concat(ok).equals(big)).toBe(true);
  });
});
