/**
 * SFTP durability against the real sshd harness: a put fsyncs the file and its directory;
 * a server without fsync@openssh.com (simulated: the capability check of the session is
 * made to fail as ssh2 does for an extension the server did not announce) fails the put
 * with a clear message and leaves nothing, unless the URL opts out with fsync=skip.
 */
import { Readable } from 'node:stream';
import { ErrorCodes } from '@dbcrate/core';
import { startSshd, type SshdHarness } from '@dbcrate/testing';
import { openStorage, parseStorageUrl, readObject, type Storage } from './index';

let sshd: SshdHarness;

beforeAll(async () => {
  sshd = await startSshd();
}, 60_000);

afterAll(async () => {
  await sshd?.stop();
});

/** Make the session behave like a server that lacks fsync@openssh.com. */
async function withoutFsync(storage: Storage): Promise<void> {
  const session = await (storage as unknown as { conn(): Promise<{ sftp: Record<string, unknown> }> }).conn();
  session.sftp.ext_openssh_fsync = () => {
    throw new Error('Server does not support this extended request');
  };
}

async function keys(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix)) out.push(o.key);
  return out;
}

describe('sftp durability', () => {
  it('fsync=require is the default; fsync=skip and bad values are parsed', () => {
    expect(parseStorageUrl(sshd.url('a'))).toMatchObject({ fsync: 'require' });
    expect(parseStorageUrl(sshd.url('a', { fsync: 'skip' }))).toMatchObject({ fsync: 'skip' });
    expect(() => parseStorageUrl(sshd.url('a', { fsync: 'maybe' }))).toThrow(/fsync=maybe/);
  });

  it('on OpenSSH a put syncs the file and the directory and succeeds', async () => {
    const storage = await openStorage(sshd.url('durable'));
    try {
      await storage.put('d/x', Readable.from(['hello']), { ifNotExists: true });
      await storage.put('d/y', Readable.from(['again']));
      expect((await readObject(storage, 'd/x')).toString()).toBe('hello');
    } finally {
      await storage.close();
    }
  });

  it('a server without fsync@openssh.com: the put fails with a clear message and leaves nothing', async () => {
    const storage = await openStorage(sshd.url('nofsync'));
    try {
      await withoutFsync(storage);
      const err = await storage.put('w/seg', Readable.from(['data'])).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: ErrorCodes.STORAGE_IO });
      expect((err as Error).message).toMatch(/does not support fsync@openssh\.com/);
      expect((err as { hint?: string }).hint).toMatch(/fsync=skip/);
      expect(await keys(storage, 'w/')).toEqual([]);
    } finally {
      await storage.close();
    }
  });

  it('… and with fsync=skip in the URL the user accepts that, and the put succeeds', async () => {
    const storage = await openStorage(sshd.url('nofsync', { fsync: 'skip' }));
    try {
      await withoutFsync(storage);
      await storage.put('w/seg', Readable.from(['data']));
      expect((await readObject(storage, 'w/seg')).toString()).toBe('data');
    } finally {
      await storage.close();
    }
  });
});
