/**
 * tar's input as the last stage of a restore chain: when tar is gone, the chain fails
 * (with tar's exit as the cause) instead of waiting forever for a pipe nobody reads.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BufferPool } from '@dbcrate/core';
import { extractTar } from './base.extract';

let dir: string;
let quitter: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'dbcrate-extract-'));
  // a "tar" that exits at once, reading nothing
  quitter = join(dir, 'quits.sh');
  writeFileSync(quitter, '#!/bin/sh\nexit 2\n');
  chmodSync(quitter, 0o755);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const within = <T>(p: Promise<T>, ms: number) =>
  Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('hung')), ms))]);

it.each([
  ['nothing left to write (only the end)', [] as Buffer[]],
  ['a chunk still to write', [Buffer.alloc(300_000, 1)]],
])('tar already gone, %s: the chain fails, it does not hang', async (_l, chunks) => {
  const tar = extractTar(quitter, dir);
  await expect(tar.exited).rejects.toThrow(/exit code 2/);
  const e = await within(pipeline(Readable.from(chunks), tar.input(new BufferPool(1024))), 5000).catch(
    (err: unknown) => err as Error & { code?: string },
  );
  expect(e).toBeInstanceOf(Error);
  expect((e as Error).message).not.toBe('hung');
});

it('a real tar: the chain ends when tar has read everything', async () => {
  const target = mkdtempSync(join(dir, 'x-'));
  const tar = extractTar('tar', target);
  // an empty archive: two zero blocks
  await within(pipeline(Readable.from([Buffer.alloc(1024)]), tar.input(new BufferPool(1024))), 5000);
  await tar.exited;
});
