import { Readable } from 'node:stream';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes } from '@dbcrate/core';
import { openStorage, type Storage } from '@dbcrate/storage';
import { walKey } from './pitr.layout';
import { awaitArchivedWal, validateArchiveTimeout } from './wal.await';

const WAL = '000000010000000000000003';

describe('awaitArchivedWal', () => {
  let dir: string;
  let storage: Storage;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-wal-await-'));
    storage = await openStorage(`file://${dir}`);
  });
  afterEach(async () => {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('validates --archive-timeout', () => {
    expect(validateArchiveTimeout(60)).toBe(60);
    for (const bad of [0, -1, Number.NaN, 86401]) {
      expect(() => validateArchiveTimeout(bad)).toThrow(expect.objectContaining({ code: ErrorCodes.USAGE }));
    }
  });

  it('returns once the file is archived, ignoring empty objects', async () => {
    await storage.put(walKey('db', WAL, 'a'.repeat(64)), Readable.from([]));
    setTimeout(
      () => void storage.put(walKey('db', WAL, 'b'.repeat(64)), Readable.from([Buffer.from('x')])),
      300,
    );
    await awaitArchivedWal({ storage, databaseId: 'db', walFile: WAL, timeoutSeconds: 5 });
  });

  it('times out with E_ARCHIVE_CHECK naming the file', async () => {
    await expect(
      awaitArchivedWal({ storage, databaseId: 'db', walFile: WAL, timeoutSeconds: 0.5 }),
    ).rejects.toMatchObject({ code: ErrorCodes.ARCHIVE_CHECK, message: expect.stringContaining(WAL) });
  });
});
