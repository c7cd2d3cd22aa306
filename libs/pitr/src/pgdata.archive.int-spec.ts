/**
 * pgdata ends the backup without waiting on the server's archiver, then waits for the stop
 * WAL file in the destination: a failing archive_command fails the backup within
 * --archive-timeout and keeps nothing; a slow one is waited for.
 */
import { chmodSync, chownSync, existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { generateKeyPair, loadRecipientKey, type RecipientKey } from '@dbcrate/crypto';
import { openStorage, type Storage } from '@dbcrate/storage';
import { postgresOsUser, startPgCluster, type PgCluster } from '@dbcrate/testing';
import { listBaseBackups } from './base.backups';
import { runPgdataBackup } from './pgdata.backup';

describe('pgdata waits for its stop WAL file in the destination', () => {
  let pg: PgCluster;
  let dir: string;
  let dest: string;
  let storage: Storage;
  let recipient: RecipientKey;
  let sysid: string;
  const pgUser = postgresOsUser();

  /** Archive into the destination's layout (a stand-in object per file), once `flag` exists. */
  async function archiveInto(flag: string): Promise<void> {
    const where = `${dest}/${sysid}/wal/$(echo %f | cut -c1-16)`;
    const cmd =
      `while [ ! -f ${flag} ]; do sleep 0.1; done; ` +
      `mkdir -p ${where} && cp %p ${where}/%f-${'0'.repeat(64)}.zst.pgp`;
    // the server's archive_command (the postgres OS user) writes below the cluster's folder
    await mkdir(join(dest, sysid, 'wal'), { recursive: true });
    chmodSync(join(dest, sysid), 0o777);
    chmodSync(join(dest, sysid, 'wal'), 0o777);
    await pg.psql(`ALTER SYSTEM SET archive_command = '${cmd.replace(/'/g, "''")}'`);
    await pg.psql('SELECT pg_reload_conf()');
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-pgdata-archive-'));
    chmodSync(dir, 0o755);
    dest = join(dir, 'dest');
    await mkdir(dest);
    chownSync(dest, pgUser.uid, pgUser.gid);
    chmodSync(dest, 0o777);
    pg = await startPgCluster({
      settings: { archive_mode: 'on', archive_command: 'false', wal_level: 'replica' },
    });
    sysid = await pg.psql('SELECT system_identifier FROM pg_control_system()');
    storage = await openStorage(`file://${dest}`);
    const pair = await generateKeyPair({ name: 'pgdata archive', passphrase: 'pgdata-archive-pass' });
    recipient = await loadRecipientKey(pair.publicArmored);
  }, 120_000);

  afterAll(async () => {
    await storage?.close();
    await pg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('fails within --archive-timeout while archive_command fails, keeping nothing', async () => {
    const t0 = Date.now();
    let e: unknown;
    try {
      await runPgdataBackup({ dbUrl: pg.superuserUrl, storage, recipients: [recipient], archiveTimeout: 3 });
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(DbcrateError);
    expect((e as DbcrateError).code).toBe(ErrorCodes.ARCHIVE_CHECK);
    expect((e as DbcrateError).message).toMatch(
      /^[0-9A-F]{24}, the WAL file that ends this base backup, did not arrive/,
    );
    expect((e as DbcrateError).hint).toMatch(/archive_command.*dbcrate check/);
    expect(Date.now() - t0).toBeLessThan(30_000);
    const base = join(dest, sysid, 'base');
    expect(existsSync(base) ? await readdir(base) : []).toEqual([]);
    expect(await listBaseBackups(storage, sysid)).toEqual([]);
  }, 60_000);

  it('waits for a slow archiver and succeeds once the stop WAL file arrives', async () => {
    const flag = join(dir, 'archive-now');
    await archiveInto(flag);
    let finished = false;
    const run = runPgdataBackup({
      dbUrl: pg.superuserUrl,
      storage,
      recipients: [recipient],
      archiveTimeout: 120,
    }).finally(() => (finished = true));
    await new Promise((r) => setTimeout(r, 4000));
    expect(finished).toBe(false);
    writeFileSync(flag, '');
    await pg.psql('SELECT pg_reload_conf()'); // wakes an archiver resting after failures
    const r = await run;
    const wal = join(dest, sysid, 'wal', r.manifest.stopWalFile.slice(0, 16));
    expect((await readdir(wal)).some((f) => f.startsWith(`${r.manifest.stopWalFile}-`))).toBe(true);
    expect((await listBaseBackups(storage, sysid)).map((b) => b.backupId)).toEqual([r.manifest.backupId]);
  }, 120_000);
});
