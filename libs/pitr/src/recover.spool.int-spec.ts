import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStorage } from '@dbcrate/storage';
import { feedSpool } from './recover';
import { PrefetchSpool } from './wal.fetch';

describe('feedSpool markers (the end of recovery needs no dbcrate process)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dbcrate-spool-'));
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  const feed = async (toEnd: boolean) => {
    const spool = new PrefetchSpool(join(dir, 'pgdata'), join(dir, 'spool'));
    // An empty archive: every fetch fails, so only the markers are left.
    await feedSpool({
      spool,
      fetch: {
        storage: new FsStorage({ kind: 'fs', root: join(dir, 'dest'), displayUrl: 'file://dest' }),
        databaseId: '7',
        keys: [],
      },
      walFiles: ['000000010000000000000003', '000000010000000000000004'],
      histories: [1],
      toEnd,
      segmentSize: 16 * 1024 * 1024,
      signal: new AbortController().signal,
    });
    return (await readdir(spool.dir)).sort();
  };

  it('--latest: the segment after the plan is missing and its last one is kept', async () => {
    expect(await feed(true)).toEqual([
      '00000001.history.missing',
      '000000010000000000000004.keep',
      '000000010000000000000005.missing',
      '00000002.history.missing',
    ]);
  });

  it('any other target: no end markers (PostgreSQL may read past the planned WAL)', async () => {
    expect(await feed(false)).toEqual(['00000001.history.missing', '00000002.history.missing']);
  });
});
