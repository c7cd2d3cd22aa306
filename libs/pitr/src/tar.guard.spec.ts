import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCodes, isDbcrateError } from '@dbcrate/core';
import { TarGuard } from './tar.guard';
import { buildTar, paxData, type TarEntry } from './tar.guard.fixture';

/** Run a tar through the guard in small chunks (headers split across chunks); what passed, and the error. */
async function guard(tar: Buffer): Promise<{ passed: number; error?: { code: string; message: string } }> {
  const chunks: Buffer[] = [];
  for (let i = 0; i < tar.length; i += 300) chunks.push(tar.subarray(i, i + 300));
  let passed = 0;
  try {
    await pipeline(
      Readable.from(chunks),
      new TarGuard(),
      new Writable({
        write(c: Buffer, _e, cb) {
          passed += c.length;
          cb();
        },
      }),
    );
    return { passed };
  } catch (e) {
    if (!isDbcrateError(e)) throw e;
    return { passed, error: { code: e.code, message: e.message } };
  }
}

const base: TarEntry[] = [
  { name: './', type: '5' },
  { name: './PG_VERSION', data: '15\n' },
  { name: './global/', type: '5' },
  { name: './global/pg_control', data: Buffer.alloc(8192, 1) },
];

describe('TarGuard', () => {
  it('passes what pg_basebackup writes, byte for byte', async () => {
    const tar = buildTar([
      ...base,
      { name: './pg_wal/', type: '5' },
      { name: 'link', type: '2', link: 'global/pg_control' },
    ]);
    expect(await guard(tar)).toEqual({ passed: tar.length });
  });

  it('passes an archive made by GNU tar (ustar, GNU and pax formats)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dbcrate-guard-'));
    try {
      mkdirSync(join(dir, 'd', 'e'), { recursive: true });
      writeFileSync(join(dir, 'd', 'e', `${'long-name-'.repeat(15)}.txt`), 'x'.repeat(5000));
      writeFileSync(join(dir, 'PG_VERSION'), '15\n');
      symlinkSync('../PG_VERSION', join(dir, 'd', 'v'));
      for (const format of ['gnu', 'posix']) {
        const tar = execFileSync('tar', [`--format=${format}`, '-c', '-f', '-', '-C', dir, '.']);
        expect(await guard(tar)).toEqual({ passed: tar.length });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const refused: [string, TarEntry][] = [
    ['a character device', { name: './dev-null', type: '3', devmajor: 1, devminor: 3 }],
    ['a block device', { name: './sda', type: '4', devmajor: 8 }],
    ['a FIFO', { name: './fifo', type: '6' }],
    ['a hard link', { name: './hard', type: '1', link: 'PG_VERSION' }],
    ['the setuid bit', { name: './suid', mode: 0o4755, data: '#!/bin/sh\n' }],
    ['the setgid bit', { name: './sgid/', type: '5', mode: 0o2755 }],
    ['an absolute or ".." path', { name: '/etc/cron.d/x', data: 'x' }],
    ['an absolute or ".." path', { name: './global/../../x', data: 'x' }],
    ['outside the data directory', { name: './evil', type: '2', link: '/etc/shadow' }],
    ['outside the data directory', { name: './global/evil', type: '2', link: '../../etc' }],
  ];
  it.each(refused)('refuses %s before tar sees it', async (why, entry) => {
    const before = buildTar(base).subarray(0, -1024).length;
    const r = await guard(buildTar([...base, entry, { name: './after', data: 'x' }]));
    expect(r.error?.code).toBe(ErrorCodes.INTEGRITY);
    expect(r.error?.message).toContain(why);
    // The refused header never reached tar whole (chunks are 300 bytes; at most a part of it did).
    expect(r.passed).toBeLessThan(before + 512);
  });

  it('refuses entries below a symlink, and a path hidden in a pax or GNU long name header', async () => {
    const under = await guard(
      buildTar([
        ...base,
        { name: 'a/', type: '5' },
        { name: 'a/b', type: '2', link: '..' },
        { name: 'a/b/x', type: '2', link: '..' },
      ]),
    );
    expect(under.error?.message).toMatch(/inside or replaces a symlink/);
    const pax = await guard(
      buildTar([
        ...base,
        { name: 'pax', type: 'x', data: paxData({ path: '../../root/x' }) },
        { name: 'innocent', data: 'x' },
      ]),
    );
    expect(pax.error?.message).toMatch(/absolute or "\.\." path/);
    const long = await guard(
      buildTar([
        ...base,
        { name: '././@LongLink', type: 'L', data: '/etc/passwd\0' },
        { name: 'innocent', data: 'x' },
      ]),
    );
    expect(long.error?.message).toMatch(/absolute or "\.\." path/);
  });

  it('refuses a damaged header and an archive cut inside an entry', async () => {
    const tar = buildTar(base);
    const bad = Buffer.from(tar);
    bad[600] ^= 0xff; // inside the second header
    expect((await guard(bad)).error?.message).toMatch(/bad checksum/);
    expect((await guard(tar.subarray(0, 1200))).error?.message).toMatch(/ends in the middle/);
  });

  // A chain of symlinks, each inside by its letters, ends outside on disk: `recover` (as root)
  // then writes recovery.signal and postgresql.auto.conf through it, anywhere.
  const chain: TarEntry[] = [
    { name: 's2', type: '2', link: '.' },
    { name: 's3', type: '2', link: 's2/..' },
    { name: 's4', type: '2', link: 's3/..' },
    { name: 'recovery.signal', type: '2', link: 's4/victim' },
  ];
  it('refuses symlinks that leave the data directory through another symlink, in either order', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dbcrate-guard-'));
    try {
      // What GNU tar makes of it without the guard: recovery.signal resolves outside.
      const data = join(dir, 'a', 'data');
      mkdirSync(data, { recursive: true });
      execFileSync('tar', ['-x', '-f', '-', '-C', data], { input: buildTar([...base, ...chain]) });
      expect(realpathSync.native(join(data, 's4'))).toBe(realpathSync.native(dir));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    for (const entries of [chain, [...chain].reverse()]) {
      const r = await guard(buildTar([...base, ...entries]));
      expect(r.error?.code).toBe(ErrorCodes.INTEGRITY);
      expect(r.error?.message).toMatch(/through the symlink|on the way of another symlink/);
    }
    // A symlink to a symlink, or through a real directory, stays fine.
    const ok = buildTar([
      ...base,
      { name: 'l1', type: '2', link: 'global/pg_control' },
      { name: 'l2', type: '2', link: 'l1' },
      { name: 'l3', type: '2', link: 'global/../PG_VERSION' },
    ]);
    expect(await guard(ok)).toEqual({ passed: ok.length });
  });

  it("checks every name tar may use: a second pax header drops the first one's path, GNU.sparse.name renames", async () => {
    // GNU tar takes the ustar name here (the later pax header replaces the earlier one).
    const twoPax = await guard(
      buildTar([
        ...base,
        { name: 'lnk', type: '2', link: 'global' },
        { name: 'pax', type: 'x', data: paxData({ path: 'innocent' }) },
        { name: 'pax', type: 'x', data: paxData({ mtime: '1700000000' }) },
        { name: 'lnk/x', data: 'x' },
      ]),
    );
    expect(twoPax.error?.message).toMatch(/inside or replaces a symlink/);
    const sparse = await guard(
      buildTar([
        ...base,
        {
          name: 'pax',
          type: 'x',
          data: paxData({ 'GNU.sparse.name': 'elsewhere', 'GNU.sparse.major': '1' }),
        },
        { name: 'innocent', data: 'x' },
      ]),
    );
    expect(sparse.error?.message).toMatch(/GNU sparse-file headers/);
  });

  it('refuses a numeric field tar would not read: tar skips such a header and takes file content for headers', async () => {
    // The "file" holds a device node's header; a checksum field "0NNNNNz " is read by a
    // lenient parser, while GNU tar skips the header and extracts the device.
    const inner = buildTar([{ name: 'devnode', type: '3', devmajor: 1, devminor: 3 }]).subarray(0, 512);
    const tar = buildTar([...base, { name: 'innocent', data: Buffer.concat([inner, Buffer.alloc(512)]) }]);
    const h = tar.subarray(tar.length - 1024 - 1024 - 512, tar.length - 1024 - 1024);
    expect(h.toString('latin1', 0, 8)).toBe('innocent');
    h.write('        ', 148, 'latin1');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}z `, 148, 'latin1');
    // What GNU tar lists (exit 2 after "Skipping to next header"): the hidden device node.
    const listed = spawnSync('tar', ['-t', '-v', '-f', '-'], { input: tar });
    expect(listed.stdout.toString()).toMatch(/^c.* devnode$/m);
    const r = await guard(tar);
    expect(r.error?.code).toBe(ErrorCodes.INTEGRITY);
    expect(r.error?.message).toMatch(/unreadable checksum field/);
    const size = await guard(
      buildTar([
        ...base,
        { name: 'pax', type: 'x', data: paxData({ size: '12abc' }) },
        { name: 'f', data: 'x' },
      ]),
    );
    expect(size.error?.message).toMatch(/unreadable size/);
  });
});
