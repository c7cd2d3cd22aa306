/**
 * A small S3 upload (a WAL segment, a manifest) is one PutObject and reserves no part buffer
 * (105 MiB by default); a body bigger than a part still goes multipart. Against s3rver.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { startS3rver, type S3rverHarness } from '@dbcrate/testing';
import { openStorage, readObject } from './index';

let s3: S3rverHarness;

beforeAll(async () => {
  s3 = await startS3rver({ buckets: ['small-put'] });
}, 60_000);

afterAll(async () => {
  await s3?.stop();
});

describe('S3 small puts', () => {
  it('a 16 MiB body: one PutObject, no part buffer allocated', async () => {
    const storage = await openStorage(s3.url('p'), { env: { ...process.env, ...s3.env } });
    const spy = jest.spyOn(Buffer, 'allocUnsafeSlow');
    try {
      s3.requests.length = 0;
      const body = randomBytes(16 * 1024 * 1024);
      const chunks = Array.from({ length: 16 }, (_, i) => body.subarray(i * 1048576, (i + 1) * 1048576));
      await storage.put('seg', Readable.from(chunks), { ifNotExists: true });
      expect(spy).not.toHaveBeenCalled();
      expect(s3.requests.filter((r) => r.method === 'PUT').map((r) => r.querystring)).toEqual([
        'x-id=PutObject',
      ]);
      expect(s3.requests.some((r) => r.querystring.includes('uploads'))).toBe(false);
      expect((await readObject(storage, 'seg')).equals(body)).toBe(true);
    } finally {
      spy.mockRestore();
      await storage.close();
    }
  });

  it('a body bigger than a part still goes multipart, byte for byte', async () => {
    const storage = await openStorage(`${s3.url('m')}&part_size=5MiB`, {
      env: { ...process.env, ...s3.env },
    });
    try {
      s3.requests.length = 0;
      const body = randomBytes(12 * 1024 * 1024);
      await storage.put('big', Readable.from([body.subarray(0, 7_000_000), body.subarray(7_000_000)]));
      expect(s3.requests.some((r) => r.querystring.includes('uploads'))).toBe(true);
      expect((await readObject(storage, 'big')).equals(body)).toBe(true);
    } finally {
      await storage.close();
    }
  });
});
