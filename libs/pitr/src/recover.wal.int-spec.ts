import { execFileSync, spawnSync } from 'node:child_process';
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeSpoolParent, removeRestoreCommand } from './recover.wal';

const isRoot = process.getuid?.() === 0;
const AUTO = "port = '5499'\nrestore_command = 'wal-fetch %f %p'\narchive_mode = 'off'\n";

/** recover (as root) edits postgresql.auto.conf of a promoted server whose OS user owns the directory. */
(isRoot ? describe : describe.skip)(
  'removeRestoreCommand as root in a directory the server user owns',
  () => {
    let root: string;
    let dir: string;
    let uid: number;

    beforeEach(() => {
      uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
      root = mkdtempSync(join(tmpdir(), 'dbcrate-autoconf-'));
      dir = join(root, 'data');
      execFileSync('install', ['-d', '-o', String(uid), '-m', '700', dir]);
    });

    afterEach(() => rmSync(root, { recursive: true, force: true }));

    it('removes restore_command, keeps the rest and the owner', async () => {
      const path = join(dir, 'postgresql.auto.conf');
      writeFileSync(path, AUTO, { mode: 0o600 });
      chownSync(path, uid, uid);
      await removeRestoreCommand(dir);
      const text = readFileSync(path, 'utf8');
      expect(text).not.toMatch(/^\s*restore_command/m);
      expect(text).toContain("archive_mode = 'off'");
      expect(statSync(path).uid).toBe(uid);
    });

    it('a symlink planted as postgresql.auto.conf is refused: root rewrites nothing it points to', async () => {
      const victim = join(root, 'root-file');
      writeFileSync(victim, AUTO, { mode: 0o600 });
      symlinkSync(victim, join(dir, 'postgresql.auto.conf'));
      await expect(removeRestoreCommand(dir)).rejects.toThrow(/is a symlink/);
      expect(readFileSync(victim, 'utf8')).toBe(AUTO);
      expect(statSync(victim).uid).toBe(0);
    });
  },
);

(isRoot ? describe : describe.skip)('the root-owned spool parent', () => {
  it('is 0711 and root-owned; one left by a killed recover (dead pid) is swept, a live one kept', async () => {
    const dead = spawnSync('true').pid!;
    const stale = mkdtempSync(join(tmpdir(), 'dbcrate-spool-'));
    mkdirSync(join(stale, 'spool'));
    writeFileSync(join(stale, 'spool', '000000010000000000000003'), 'decrypted WAL');
    writeFileSync(join(stale, 'recover.pid'), String(dead));
    const live = mkdtempSync(join(tmpdir(), 'dbcrate-spool-'));
    writeFileSync(join(live, 'recover.pid'), String(process.pid));
    let made: string | undefined;
    try {
      made = await makeSpoolParent();
      expect(existsSync(stale)).toBe(false);
      expect(existsSync(live)).toBe(true);
      const st = statSync(made);
      expect([st.uid, st.mode & 0o777]).toEqual([0, 0o711]);
      expect(readFileSync(join(made, 'recover.pid'), 'utf8')).toBe(String(process.pid));
    } finally {
      for (const d of [stale, live, made]) if (d) rmSync(d, { recursive: true, force: true });
    }
  });
});
