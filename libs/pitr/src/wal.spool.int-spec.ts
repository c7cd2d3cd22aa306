import { execFileSync } from 'node:child_process';
import {
  lstatSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  chownSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeTree } from './tree.remove';
import { PrefetchSpool, writeAtomically } from './wal.fetch';

const isRoot = process.getuid?.() === 0;
const WAL = '000000010000000000000007';

/**
 * recover as root writes WAL into a spool the server's OS user can write. That user (or any
 * superuser of the recovered server, COPY … TO PROGRAM) can plant a symlink at the temp name:
 * root must neither write through it nor chown its target (that would hand the user a root file).
 */
(isRoot ? describe : describe.skip)('writing WAL as root into a directory the server user can write', () => {
  let root: string;
  let spool: string;
  let victim: string;
  let owner: { uid: number; gid: number };

  beforeEach(() => {
    owner = {
      uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
      gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
    };
    root = mkdtempSync(join(tmpdir(), 'dbcrate-spool-attack-'));
    spool = join(root, 'spool');
    victim = join(root, 'root-only.conf');
    writeFileSync(victim, 'root secret\n', { mode: 0o600 });
  });

  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('a symlink at the temp name is replaced, not followed: its target keeps content and owner', async () => {
    const s = new PrefetchSpool('/nonexistent', spool);
    await s.put('00000002.history', Buffer.from('1\t0/4000060\tno reason\n'), owner); // makes the spool
    symlinkSync(victim, join(spool, `${WAL}.dbcrate-tmp`));
    await s.put(WAL, Buffer.from('wal bytes'), owner);
    expect(readFileSync(victim, 'utf8')).toBe('root secret\n');
    expect(statSync(victim).uid).toBe(0);
    expect(readFileSync(join(spool, WAL), 'utf8')).toBe('wal bytes');
    expect(lstatSync(join(spool, WAL)).isFile()).toBe(true);
    expect(statSync(join(spool, WAL)).uid).toBe(owner.uid);
  });

  it('writeAtomically: a dangling symlink at the temp name creates nothing where it points', async () => {
    const dir = join(root, 'd');
    execFileSync('install', ['-d', '-o', String(owner.uid), '-m', '700', dir]);
    const target = join(root, 'created-by-root');
    symlinkSync(target, join(dir, `${WAL}.dbcrate-tmp`));
    await writeAtomically(join(dir, WAL), Buffer.from('x'), owner);
    expect(() => lstatSync(target)).toThrow(/ENOENT/);
    expect(readFileSync(join(dir, WAL), 'utf8')).toBe('x');
  });

  it('a spool path that is a symlink is refused, not chowned through', async () => {
    const elsewhere = join(root, 'elsewhere');
    execFileSync('mkdir', [elsewhere]);
    chownSync(elsewhere, 0, 0);
    symlinkSync(elsewhere, spool);
    await expect(new PrefetchSpool('/nonexistent', spool).put(WAL, Buffer.from('x'), owner)).rejects.toThrow(
      /not a directory/,
    );
    expect(statSync(elsewhere).uid).toBe(0);
  });
});

(isRoot ? describe : describe.skip)('removing a tree the server user can write, as root', () => {
  it('removes it all and never follows a symlink in it', async () => {
    const root = mkdtempSync(join(tmpdir(), 'dbcrate-rmtree-'));
    try {
      const keep = join(root, 'keep');
      execFileSync('mkdir', ['-p', join(keep, 'sub'), join(root, 'tree', 'a')]);
      writeFileSync(join(keep, 'sub', 'f'), 'x');
      symlinkSync(keep, join(root, 'tree', 'a', 'link'));
      symlinkSync(join(keep, 'sub'), join(root, 'tree', 'link2'));
      await removeTree(join(root, 'tree'));
      expect(() => lstatSync(join(root, 'tree'))).toThrow(/ENOENT/);
      expect(readFileSync(join(keep, 'sub', 'f'), 'utf8')).toBe('x');
      await removeTree(join(root, 'absent')); // no error
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
