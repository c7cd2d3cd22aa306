import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, isDbcrateError } from '@dbcrate/core';
import { writeKeyFiles } from './key-files';

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'dbcrate-keyfiles-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isDbcrateError(e)) return e.code;
    throw e;
  }
  throw new Error('expected a failure');
}

const files = () => [
  { path: join(dir, 'org.pub.asc'), data: 'PUBLIC', mode: 0o644 },
  { path: join(dir, 'org.key.asc'), data: 'PRIVATE', mode: 0o600 },
];

describe('writeKeyFiles', () => {
  it('writes both, private 0600, and leaves no temp file', async () => {
    await writeKeyFiles(files());
    expect(readFileSync(join(dir, 'org.key.asc'), 'utf8')).toBe('PRIVATE');
    expect(statSync(join(dir, 'org.key.asc')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'org.pub.asc')).mode & 0o777).toBe(0o644);
    expect(readdirSync(dir).sort()).toEqual(['org.key.asc', 'org.pub.asc']);
  });

  it('writes nothing when the second file cannot be written (an old private key is there)', async () => {
    writeFileSync(join(dir, 'org.key.asc'), 'OLD PRIVATE', { mode: 0o600 });
    expect(await code(writeKeyFiles(files()))).toBe(ErrorCodes.USAGE);
    expect(readdirSync(dir)).toEqual(['org.key.asc']);
    expect(readFileSync(join(dir, 'org.key.asc'), 'utf8')).toBe('OLD PRIVATE');
  });

  it('removes the first file again when linking the second fails after it', async () => {
    // The second name appears between the check and the link (another keys generate): the
    // link fails, and the public key already linked is taken back.
    const f = files();
    const realData = f[1].data;
    Object.defineProperty(f[1], 'data', {
      get: () => {
        writeFileSync(join(dir, 'org.key.asc'), 'RACED', { mode: 0o600 });
        return realData;
      },
    });
    expect(await code(writeKeyFiles(f))).toBe(ErrorCodes.USAGE);
    expect(readdirSync(dir)).toEqual(['org.key.asc']);
    expect(readFileSync(join(dir, 'org.key.asc'), 'utf8')).toBe('RACED');
  });
});
