/**
 * Base backups read straight from the data directory (method pgdata) against a real
 * cluster archiving with cp: backup under pgbench load, restore and recovery, files that
 * vanish or change size while read, the stock escape hatch for every part, a foreign data
 * directory refused, cleanup on failure.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  mkdtempSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import {
  generateKeyPair,
  loadDecryptionKey,
  loadRecipientKey,
  type DecryptionKey,
  type RecipientKey,
} from '@dbcrate/crypto';
import { openStorage, type Storage } from '@dbcrate/storage';
import {
  freePort,
  pitrServerOf,
  postgresOsUser,
  startPgCluster,
  waitArchived,
  type PgCluster,
} from '@dbcrate/testing';
import { listBaseBackups, restoreBaseBackup } from './base.backups';
import { takeBaseBackup } from './basebackup.method';
import { runPgdataBackup } from './pgdata.backup';

const execFileP = promisify(execFile);
const PASSPHRASE = 'pgdata test passphrase';

async function caught(p: Promise<unknown>): Promise<DbcrateError> {
  try {
    await p;
  } catch (e) {
    return e as DbcrateError;
  }
  throw new Error('expected a rejection');
}

async function keysUnder(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix)) out.push(o.key);
  return out.sort();
}

describe('base backups read from the data directory (pgdata)', () => {
  let pg: PgCluster;
  let dir: string;
  let archive: string;
  let dest: string;
  let storage: Storage;
  let recipient: RecipientKey;
  let privateArmored: string;
  let key: DecryptionKey;
  const started: string[] = [];
  const pgUser = postgresOsUser();

  const asPostgres = (cmd: string, args: string[]) =>
    process.getuid?.() === 0
      ? execFileP('runuser', ['-u', 'postgres', '--', cmd, ...args])
      : execFileP(cmd, args);

  /** Start a restored directory on its own port, replaying from the cp archive to its end. */
  async function startRestored(target: string): Promise<{ port: number; url: (db: string) => string }> {
    const port = await freePort();
    appendFileSync(
      join(target, 'postgresql.auto.conf'),
      `port = ${port}\narchive_mode = off\nrestore_command = 'cp ${archive}/%f %p'\n` +
        `unix_socket_directories = '${target}'\n`,
    );
    writeFileSync(join(target, 'recovery.signal'), '');
    if (process.getuid?.() === 0) {
      execFileSync('chown', ['-R', `${pgUser.uid}:${pgUser.gid}`, target]);
    }
    started.push(target);
    await asPostgres(join(pg.binDir, 'pg_ctl'), [
      'start',
      '-D',
      target,
      '-w',
      '-t',
      '120',
      '-l',
      join(target, 'log'),
    ]);
    // recovery ends at the end of the archive and the server promotes itself
    for (let i = 0; i < 600; i++) {
      const r = await execFileP(
        join(pg.binDir, 'psql'),
        [
          '-h',
          '127.0.0.1',
          '-p',
          String(port),
          '-U',
          pg.superuser,
          '-Atc',
          'SELECT pg_is_in_recovery()',
          'postgres',
        ],
        {
          env: { ...process.env, PGPASSWORD: pg.password },
        },
      ).catch(() => ({ stdout: '' }));
      if (r.stdout.trim() === 'f') break;
      await new Promise((res) => setTimeout(res, 100));
    }
    const url = (db: string) => pg.url(db).replace(`:${pg.port}/`, `:${port}/`);
    return { port, url };
  }

  async function psqlAt(url: string, sql: string): Promise<string> {
    const { stdout } = await execFileP(join(pg.binDir, 'psql'), ['-Atc', sql, url]);
    return stdout.trim();
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-pgdata-'));
    chmodSync(dir, 0o755); // the server's archive_command writes below it
    archive = join(dir, 'archive');
    await mkdir(archive);
    chownSync(archive, pgUser.uid, pgUser.gid);
    pg = await startPgCluster({
      settings: { archive_mode: 'on', archive_command: `cp %p ${archive}/%f`, wal_level: 'replica' },
    });
    dest = join(dir, 'dest');
    await mkdir(dest);
    storage = await openStorage(`file://${dest}`);
    const pair = await generateKeyPair({ name: 'pgdata test', passphrase: PASSPHRASE });
    privateArmored = pair.privateArmored;
    recipient = await loadRecipientKey(pair.publicArmored);
    key = await loadDecryptionKey(pair.privateArmored, PASSPHRASE);
    await execFileP(join(pg.binDir, 'pgbench'), ['-i', '-s', '4', '-q', pg.superuserUrl]);
    await pg.psql('CREATE UNLOGGED TABLE scratch AS SELECT i FROM generate_series(1, 1000) i');
  }, 120_000);

  afterAll(async () => {
    for (const d of started)
      await asPostgres(join(pg.binDir, 'pg_ctl'), ['stop', '-D', d, '-m', 'immediate']).catch(
        () => undefined,
      );
    await storage?.close();
    await pg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('backs up under pgbench load in parallel parts; restore and recovery give the same data', async () => {
    const bench = spawn(join(pg.binDir, 'pgbench'), ['-c', '2', '-T', '600', '-n', pg.superuserUrl], {
      stdio: 'ignore',
    });
    try {
      await new Promise((r) => setTimeout(r, 500));
      const r = await takeBaseBackup({
        method: 'auto',
        dbUrl: pg.superuserUrl,
        storage,
        recipients: [recipient],
        parallel: 3,
      });
      const m = r.manifest;
      expect(m.formatVersion).toBe(2);
      expect(m.tool.name).toBe('dbcrate');
      if (m.formatVersion !== 2) return;
      expect(m.objects).toHaveLength(3);
      expect(m.files!.map((f) => f.path)).toEqual(
        expect.arrayContaining(['PG_VERSION', 'global/pg_control', 'backup_label', 'backup_manifest']),
      );
      expect(m.files!.some((f) => f.path.startsWith('pg_wal/'))).toBe(false);
      expect(m.files!.some((f) => f.path === 'postmaster.pid')).toBe(false);
      const parts = new Set(m.files!.map((f) => f.part));
      expect(parts.size).toBe(3);
      const list = await listBaseBackups(storage, m.databaseId);
      expect(list.find((e) => e.backupId === m.backupId)?.status).toBe('complete');
    } finally {
      bench.kill('SIGINT');
      await new Promise((r) => bench.once('close', r));
    }
    const sum = await pg.psql('SELECT sum(abalance)::text || count(*) FROM pgbench_accounts');
    await waitArchived(pitrServerOf(pg));

    const manifest = (
      await listBaseBackups(storage, await pg.psql('SELECT system_identifier FROM pg_control_system()'))
    ).at(-1)!.manifest!;
    const target = join(dir, 'restored');
    await restoreBaseBackup({ storage, manifest, keys: [key], targetDir: target });
    // stock tools can check the restored files against the backup_manifest inside the archive
    await execFileP(join(pg.binDir, 'pg_verifybackup'), ['-n', target]);
    expect((await readdir(join(target, 'pg_wal'))).sort()).toEqual(['archive_status']);
    const srv = await startRestored(target);
    expect(
      await psqlAt(srv.url('postgres'), 'SELECT sum(abalance)::text || count(*) FROM pgbench_accounts'),
    ).toBe(sum);
    // the unlogged table comes back empty (its init fork only)
    expect(await psqlAt(srv.url('postgres'), 'SELECT count(*) FROM scratch')).toBe('0');
  }, 150_000);
});
