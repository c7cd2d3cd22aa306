/**
 * Folder semantics of the file and SFTP backends: a destination that cannot be created
 * fails at once with the reason (never a hang, never "does not exist" for a failed mkdir),
 * folders and files reached through symlinks are listed, a link loop ends, and a missing
 * root or a plain file is an error for read-only commands rather than an empty archive.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { startSshd, type SshdHarness } from '@dbcrate/testing';
import type { Storage } from './storage';
import { openStorage } from './storage.factory';

async function failure(p: Promise<unknown>): Promise<DbcrateError> {
  try {
    await p;
  } catch (e) {
    return e as DbcrateError;
  }
  throw new Error('expected a failure');
}

async function keys(s: Storage, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for await (const o of s.list(prefix)) out.push(o.key);
  return out.sort();
}

describe('folders (file, sftp)', () => {
  let dir: string;
  let sshd: SshdHarness;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-folders-'));
    sshd = await startSshd();
  });
  afterAll(async () => {
    await sshd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a folder that cannot be created fails at once with why (no endless mkdir loop under /proc)', async () => {
    const s = await openStorage('file:///proc/dbcrate-nowhere');
    const e = await failure(s.put('a/b', Readable.from([Buffer.from('x')])));
    expect(e.code).toBe(ErrorCodes.STORAGE_DENIED);
    expect(e.message).toContain('cannot create the folder /proc/dbcrate-nowhere');
    writeFileSync(join(dir, 'plain'), 'x');
    const f = await openStorage(`file://${join(dir, 'plain', 'sub')}`);
    const e2 = await failure(f.put('k', Readable.from([Buffer.from('x')])));
    expect(e2.message).toMatch(/cannot create the folder .*: a part of the path is a file, not a folder/);
  }, 20_000);

  it('file: symlinked folders and files are listed; a link loop is walked once', async () => {
    const root = join(dir, 'linked');
    const elsewhere = join(dir, 'elsewhere');
    mkdirSync(join(elsewhere, 'dumps'), { recursive: true });
    writeFileSync(join(elsewhere, 'dumps', 'x.manifest.json'), '{}');
    mkdirSync(root);
    symlinkSync(elsewhere, join(root, 'orders'));
    symlinkSync(join(elsewhere, 'dumps', 'x.manifest.json'), join(root, 'file-link'));
    symlinkSync(root, join(elsewhere, 'loop'));
    symlinkSync(join(dir, 'gone'), join(root, 'dangling'));
    const s = await openStorage(`file://${root}`);
    expect(await keys(s)).toEqual(['file-link', 'orders/dumps/x.manifest.json']);
    expect(await keys(s, 'orders/dumps/')).toEqual(['orders/dumps/x.manifest.json']);
  });

  it('sftp: a symlinked folder is listed', async () => {
    const elsewhere = join(sshd.root, 'elsewhere');
    mkdirSync(join(elsewhere, 'dumps'), { recursive: true });
    writeFileSync(join(elsewhere, 'dumps', 'y.manifest.json'), '{}');
    mkdirSync(join(sshd.root, 'linked'));
    symlinkSync(elsewhere, join(sshd.root, 'linked', 'orders'));
    symlinkSync(join(sshd.root, 'linked'), join(elsewhere, 'loop'));
    const s = await openStorage(sshd.url('linked'));
    try {
      expect(await keys(s)).toEqual(['orders/dumps/y.manifest.json']);
    } finally {
      await s.close();
    }
  });

  it('checkRoot: a missing folder or a plain file is E_STORAGE_NOT_FOUND; a folder passes', async () => {
    for (const url of [
      `file://${join(dir, 'missing')}`,
      `file://${join(dir, 'plain')}`,
      sshd.url('missing'),
    ]) {
      const s = await openStorage(url);
      try {
        const e = await failure(s.checkRoot!());
        expect(e.code).toBe(ErrorCodes.STORAGE_NOT_FOUND);
        expect(e.message).toMatch(/does not exist|is a file, not a folder/);
      } finally {
        await s.close();
      }
    }
    const ok = await openStorage(`file://${dir}`);
    await expect(ok.checkRoot!()).resolves.toBeUndefined();
  });

  it.each(['file', 'sftp'])(
    '%s: a put into a folder removed since (by us or another writer) makes it again',
    async (kind) => {
      const url = kind === 'file' ? `file://${join(dir, 'again')}` : sshd.url('again');
      const root = kind === 'file' ? join(dir, 'again') : join(sshd.root, 'again');
      const s = await openStorage(url);
      try {
        const put = (k: string) => s.put(k, Readable.from([Buffer.from(k)]), { ifNotExists: true });
        await put('db/claims/one');
        await s.delete('db/claims/one');
        await s.removeEmptyDir!('db/claims');
        await put('db/claims/two'); // this session's own cleanup
        await s.delete('db/claims/two');
        rmSync(join(root, 'db', 'claims'), { recursive: true }); // another writer's cleanup
        await put('db/claims/three');
        expect(await keys(s)).toEqual(['db/claims/three']);
      } finally {
        await s.close();
      }
    },
  );
});
