import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsStorage } from '@dbcrate/storage';
import { feedSpool } from './recover';
import { PrefetchSpool } from './wal.fetch';

describe('feedSpool markers', () => {
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
      signal: new AbortController().signal,
    });
    return (await readdir(spool.dir)).sort();
  };

  it('--latest: its last segment is kept; the one after it is not marked missing (it may yet be archived)', async () => {
    expect(await feed(true)).toEqual(['000000010000000000000004.keep', '00000002.history.missing']);
  });

  it('any other target: no end marker', async () => {
    expect(await feed(false)).toEqual(['00000002.history.missing']);
  });
});
