/**
 * Restores against a real cluster from a local folder: a failing pg_restore is a clear
 * E_DB_TOOL_FAILED, and the plaintext spool of a parallel restore is removed on every
 * failure path (integrity failure, pg_restore failure, interruption) and swept after a kill.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import {
  generateKeyPair,
  loadDecryptionKey,
  loadRecipientKey,
  type DecryptionKey,
  type RecipientKey,
} from '@dbcrate/crypto';
import { findClientTools } from '@dbcrate/postgres';
import { openStorage, type Storage } from '@dbcrate/storage';
import { sampleDatabase, startPgCluster, type PgCluster } from '@dbcrate/testing';
import { runBackup, type BackupResult } from './backup.pipeline';
import { runRestore, type RestoreOptions } from './restore.pipeline';
import { SPOOL_PREFIX } from './restore.spool';

async function caught(p: Promise<unknown>): Promise<DbcrateError> {
  try {
    await p;
  } catch (e) {
    return e as DbcrateError;
  }
  throw new Error('expected a rejection');
}

/** A real storage whose `nth` get of `key` has one byte flipped in the middle (bit rot between two reads). */
function flipOnGet(storage: Storage, key: string, nth: number): Storage {
  let gets = 0;
  return new Proxy(storage, {
    get(target, prop, receiver) {
      if (prop === 'get') {
        return async (k: string, opts?: { signal?: AbortSignal }) => {
          const r = await target.get(k, opts);
          if (k !== key || ++gets !== nth) return r;
          let seen = 0;
          const out = new PassThrough();
          r.on('data', (c: Buffer) => {
            const copy = Buffer.from(c);
            const mid = 200_000 - seen;
            if (mid >= 0 && mid < copy.length) copy[mid] ^= 0xff;
            seen += c.length;
            out.write(copy);
          });
          r.on('end', () => out.end());
          r.on('error', (e) => out.destroy(e));
          return out as Readable;
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('restore: clear failures, no plaintext left behind', () => {
  let pg: PgCluster;
  let dir: string;
  let storage: Storage;
  let recipient: RecipientKey;
  let key: DecryptionKey;
  let plain: BackupResult;
  let owned: BackupResult;
  let n = 0;

  const spoolDir = () => {
    const d = join(dir, `spool-${++n}`);
    mkdirSync(d);
    return d;
  };
  const target = async () => pg.createDatabase(`nofalse_target_${++n}`);
  const restore = async (o: Partial<RestoreOptions> & { snapshot: string }) =>
    runRestore({ storage, keys: [key], targetUrl: await target(), ...o });

  beforeAll(async () => {
    pg = await startPgCluster();
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-restore-nofalse-'));
    storage = await openStorage(`file://${join(dir, 'dest')}`);
    const pair = await generateKeyPair({ name: 'restore failures', passphrase: 'restore-pass-123' });
    recipient = await loadRecipientKey(pair.publicArmored);
    key = await loadDecryptionKey(pair.privateArmored, 'restore-pass-123');

    const src = await pg.createDatabase('nofalse_restore_src');
    await sampleDatabase(src, { rows: 3000 });
    plain = await runBackup({ dbUrl: src, storage, recipients: [recipient], databaseId: 'plain' });

    // A dump whose table belongs to a role that no longer exists when it is restored.
    const ghost = await pg.createDatabase('nofalse_ghost_src');
    await pg.psql(
      'CREATE ROLE ghost_owner; CREATE TABLE g (i int); ALTER TABLE g OWNER TO ghost_owner; INSERT INTO g VALUES (1);',
      'nofalse_ghost_src',
    );
    owned = await runBackup({ dbUrl: ghost, storage, recipients: [recipient], databaseId: 'owned' });
    await pg.psql('DROP TABLE g; DROP ROLE ghost_owner;', 'nofalse_ghost_src');
  });

  afterAll(async () => {
    await storage?.close();
    await Promise.allSettled([pg?.stop(), dir && rm(dir, { recursive: true, force: true })]);
  });

  it.each([1, 2])(
    'a pg_restore that fails (missing role, --jobs %i) is E_DB_TOOL_FAILED naming the cause; no spool stays',
    async (jobs) => {
      const spool = spoolDir();
      const e = await caught(
        restore({ snapshot: `owned/${owned.manifest.snapshotId}`, jobs, spoolDir: spool }),
      );
      expect(e).toBeInstanceOf(DbcrateError);
      expect(e.code).toBe(ErrorCodes.DB_TOOL_FAILED);
      expect(e.exitCode).toBe(3);
      expect(e.message).toMatch(/^pg_restore exited with code 1/);
      expect(e.message).toContain('role "ghost_owner" does not exist');
      expect(await readdir(spool)).toEqual([]);
    },
  );

  it('an object that changes between the check and the restore fails, and the spool is removed', async () => {
    const spool = spoolDir();
    const e = await caught(
      runRestore({
        storage: flipOnGet(storage, plain.dataKey, 2),
        snapshot: `plain/${plain.manifest.snapshotId}`,
        keys: [key],
        targetUrl: await target(),
        jobs: 2,
        spoolDir: spool,
      }),
    );
    // Whichever stage notices first: the decompressor, the cipher, or the sha256 check.
    expect([ErrorCodes.INTEGRITY, ErrorCodes.CODEC]).toContain(e.code);
    expect(await readdir(spool)).toEqual([]);
  });

  it('an interrupted parallel restore stops pg_restore, removes the spool, and says so', async () => {
    // pg_restore that signals once it holds the spool, then hangs: the interruption lands there, every time.
    const tools = await findClientTools(15);
    const bin = join(dir, 'hanging-bin');
    mkdirSync(bin);
    for (const t of ['pg_dump', 'psql', 'pg_basebackup']) symlinkSync(join(tools.binDir, t), join(bin, t));
    const ready = join(dir, 'pg_restore.ready');
    writeFileSync(join(bin, 'pg_restore'), `#!/bin/sh\necho $$ > '${ready}'\nexec sleep 30\n`);
    chmodSync(join(bin, 'pg_restore'), 0o755);

    const spool = spoolDir();
    const ac = new AbortController();
    const running = caught(
      restore({
        snapshot: `plain/${plain.manifest.snapshotId}`,
        jobs: 2,
        spoolDir: spool,
        pgBinDir: bin,
        signal: ac.signal,
      }),
    );
    while (!existsSync(ready)) await new Promise((r) => setTimeout(r, 20));
    const [spooled] = await readdir(spool);
    expect(spooled.startsWith(SPOOL_PREFIX)).toBe(true);
    expect((await readdir(join(spool, spooled))).sort()).toEqual([
      `${plain.manifest.snapshotId}.dump`,
      'owner.pid',
    ]);
    const t0 = Date.now();
    ac.abort(new Error('SIGTERM received'));
    const e = await running;
    expect(e.code).toBe(ErrorCodes.INTERRUPTED);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(await readdir(spool)).toEqual([]);
  }, 30_000);

  it('a signal that lands after pg_restore committed does not turn the success into "interrupted"', async () => {
    // pg_restore that has read the whole dump, then gets SIGTERM, ignores it and exits 0 (committed).
    const tools = await findClientTools(15);
    const bin = join(dir, 'stubborn-bin');
    mkdirSync(bin);
    for (const t of ['pg_dump', 'psql', 'pg_basebackup']) symlinkSync(join(tools.binDir, t), join(bin, t));
    const ready = join(dir, 'stubborn.ready');
    const go = join(dir, 'stubborn.go');
    writeFileSync(
      join(bin, 'pg_restore'),
      `#!/bin/sh\ntrap '' TERM\ncat > /dev/null\ntouch '${ready}'\nwhile [ ! -e '${go}' ]; do sleep 0.05; done\nexit 0\n`,
    );
    chmodSync(join(bin, 'pg_restore'), 0o755);
    const ac = new AbortController();
    const running = restore({
      snapshot: `plain/${plain.manifest.snapshotId}`,
      jobs: 1,
      pgBinDir: bin,
      signal: ac.signal,
    });
    while (!existsSync(ready)) await new Promise((r) => setTimeout(r, 20));
    ac.abort(new Error('SIGTERM received'));
    writeFileSync(go, '');
    const r = await running;
    expect(r.manifest.snapshotId).toBe(plain.manifest.snapshotId);
  }, 30_000);

  it('a spool left by a killed restore is swept by the next one; live and unmarked ones are left alone', async () => {
    const spool = spoolDir();
    const dead = spawnSync('/bin/true').pid!;
    const stale = join(spool, `${SPOOL_PREFIX}stale1`);
    const live = join(spool, `${SPOOL_PREFIX}live01`);
    const unmarked = join(spool, `${SPOOL_PREFIX}unmark`);
    // a live pid that started at another time than the record says is a reused pid
    const reused = join(spool, `${SPOOL_PREFIX}reused`);
    for (const d of [stale, live, unmarked, reused]) {
      mkdirSync(d, { mode: 0o700 });
      writeFileSync(join(d, 'x.dump'), 'decrypted data');
    }
    writeFileSync(join(stale, 'owner.pid'), `${dead}\n`);
    writeFileSync(join(live, 'owner.pid'), `${process.pid}\n`);
    writeFileSync(join(reused, 'owner.pid'), JSON.stringify({ pid: process.ppid, start: '1' }));
    const r = await restore({ snapshot: `plain/${plain.manifest.snapshotId}`, jobs: 2, spoolDir: spool });
    expect(r.manifest.snapshotId).toBe(plain.manifest.snapshotId);
    expect((await readdir(spool)).sort()).toEqual([`${SPOOL_PREFIX}live01`, `${SPOOL_PREFIX}unmark`]);
  });

  it('the sweep neither hangs on a FIFO nor follows a symlink planted under a spool name', async () => {
    const spool = spoolDir();
    const dead = spawnSync('/bin/true').pid!;
    const fifoDir = join(spool, `${SPOOL_PREFIX}fifo01`);
    mkdirSync(fifoDir, { mode: 0o700 });
    execFileSync('mkfifo', [join(fifoDir, 'owner.pid')]);
    // a symlink to a folder that looks stale must not make the sweep remove its target
    const victim = mkdtempSync(join(tmpdir(), 'dbcrate-victim-'));
    chmodSync(victim, 0o700);
    writeFileSync(join(victim, 'owner.pid'), `${dead}\n`);
    writeFileSync(join(victim, 'precious'), 'keep me');
    symlinkSync(victim, join(spool, `${SPOOL_PREFIX}link01`));
    // a world-readable folder is not one we created
    const open = join(spool, `${SPOOL_PREFIX}open01`);
    mkdirSync(open, { mode: 0o755 });
    chmodSync(open, 0o755);
    writeFileSync(join(open, 'owner.pid'), `${dead}\n`);
    const r = await restore({ snapshot: `plain/${plain.manifest.snapshotId}`, jobs: 2, spoolDir: spool });
    expect(r.manifest.snapshotId).toBe(plain.manifest.snapshotId);
    expect(existsSync(join(victim, 'precious'))).toBe(true);
    expect((await readdir(spool)).sort()).toEqual([
      `${SPOOL_PREFIX}fifo01`,
      `${SPOOL_PREFIX}link01`,
      `${SPOOL_PREFIX}open01`,
    ]);
    rmSync(victim, { recursive: true, force: true });
  }, 30_000);
});
