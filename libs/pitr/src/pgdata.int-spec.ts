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
  existsSync,
  readFileSync,
  mkdtempSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
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

  /** The server archives with cp, not into the destination: wait for the stop WAL file there. */
  async function cpArchived(walFile: string): Promise<void> {
    for (let i = 0; i < 600; i++) {
      if (existsSync(join(archive, walFile))) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    throw new Error(`${walFile} was not archived`);
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
        hooks: { archived: cpArchived },
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
    // stock tools can check the restored files against the backup_manifest inside the archive,
    // whose per-file checksums are CRC-32C (pg_basebackup's default), one for every file
    const pgManifest = JSON.parse(await readFile(join(target, 'backup_manifest'), 'utf8')) as {
      Files: { 'Checksum-Algorithm': string; Checksum: string }[];
    };
    expect(pgManifest.Files.length).toBeGreaterThan(100);
    expect(new Set(pgManifest.Files.map((f) => f['Checksum-Algorithm']))).toEqual(new Set(['CRC32C']));
    expect(pgManifest.Files.every((f) => /^[0-9a-f]{8}$/.test(f.Checksum))).toBe(true);
    await execFileP(join(pg.binDir, 'pg_verifybackup'), ['-n', target]);
    expect((await readdir(join(target, 'pg_wal'))).sort()).toEqual(['archive_status']);
    const srv = await startRestored(target);
    expect(
      await psqlAt(srv.url('postgres'), 'SELECT sum(abalance)::text || count(*) FROM pgbench_accounts'),
    ).toBe(sum);
    // the unlogged table comes back empty (its init fork only)
    expect(await psqlAt(srv.url('postgres'), 'SELECT count(*) FROM scratch')).toBe('0');
  }, 150_000);

  it('skips a file that vanishes, pads one that shrinks, cuts one that grows, and notes them', async () => {
    const big = Buffer.alloc(3 * 1024 * 1024 + 100, 7);
    for (const n of ['dbcrate_vanish', 'dbcrate_shrink', 'dbcrate_grow']) {
      writeFileSync(join(pg.dataDir, n), big);
      chownSync(join(pg.dataDir, n), pgUser.uid, pgUser.gid);
    }
    const r = await runPgdataBackup({
      dbUrl: pg.superuserUrl,
      storage,
      recipients: [recipient],
      parallel: 2,
      hooks: {
        archived: cpArchived,
        beforeFile: (p) => {
          if (p === 'dbcrate_vanish') unlinkSync(join(pg.dataDir, p));
        },
        afterOpen: (p) => {
          if (p === 'dbcrate_shrink') truncateSync(join(pg.dataDir, p), 1000);
          if (p === 'dbcrate_grow') appendFileSync(join(pg.dataDir, p), big);
        },
      },
    });
    const files = r.manifest.files!;
    expect(files.find((f) => f.path === 'dbcrate_vanish')).toBeUndefined();
    expect(files.find((f) => f.path === 'dbcrate_shrink')).toMatchObject({
      size: big.length,
      changed: 'shorter',
    });
    expect(files.find((f) => f.path === 'dbcrate_grow')).toMatchObject({
      size: big.length,
      changed: 'longer',
    });
    const target = join(dir, 'changed');
    await restoreBaseBackup({ storage, manifest: r.manifest, keys: [key], targetDir: target });
    const shrunk = readFileSync(join(target, 'dbcrate_shrink'));
    expect(shrunk.length).toBe(big.length);
    expect(shrunk.subarray(0, 1000).every((b) => b === 7)).toBe(true);
    expect(shrunk.subarray(1000).every((b) => b === 0)).toBe(true);
    expect(readFileSync(join(target, 'dbcrate_grow')).length).toBe(big.length);
    for (const n of ['dbcrate_shrink', 'dbcrate_grow']) unlinkSync(join(pg.dataDir, n));
    await rm(target, { recursive: true, force: true });
  }, 120_000);

  it('opens without dbcrate: gpg -d | zstd -d | tar -x of every part, then recovery from the archive', async () => {
    const r = await runPgdataBackup({
      hooks: { archived: cpArchived },
      dbUrl: pg.superuserUrl,
      storage,
      recipients: [recipient],
      parallel: 2,
    });
    await pg.psql('CREATE TABLE after_hatch AS SELECT 42 AS v');
    await waitArchived(pitrServerOf(pg));
    const gnupg = mkdtempSync(join(tmpdir(), 'dbcrate-pgdata-gnupg-'));
    const target = join(dir, 'hatch');
    await mkdir(target, { mode: 0o700 });
    try {
      const passFile = join(gnupg, 'pass');
      writeFileSync(passFile, `${PASSPHRASE}\n`, { mode: 0o600 });
      const gpg = [
        '--homedir',
        gnupg,
        '--batch',
        '--pinentry-mode',
        'loopback',
        '--passphrase-file',
        passFile,
      ];
      execFileSync('gpg', [...gpg, '--import'], { input: privateArmored, stdio: 'pipe' });
      for (const o of r.manifest.objects) {
        execFileSync(
          'bash',
          [
            '-o',
            'pipefail',
            '-c',
            'gpg "$@" --quiet --decrypt "$DATA" | zstd -d -c | tar -x -f - -C "$TARGET"',
            'gpg',
            ...gpg,
          ],
          { env: { ...process.env, DATA: join(dest, o.key), TARGET: target } },
        );
      }
    } finally {
      execFileSync('gpgconf', ['--homedir', gnupg, '--kill', 'gpg-agent'], { stdio: 'ignore' });
      await rm(gnupg, { recursive: true, force: true });
    }
    await execFileP(join(pg.binDir, 'pg_verifybackup'), ['-n', target]);
    const srv = await startRestored(target);
    expect(await psqlAt(srv.url('postgres'), 'SELECT v FROM after_hatch')).toBe('42');
  }, 150_000);

  it("refuses a data directory that is not the server's, before writing anything", async () => {
    const fake = join(dir, 'fake');
    await mkdir(join(fake, 'global'), { recursive: true });
    const control = Buffer.alloc(8192);
    control.writeBigUInt64LE(12345n, 0);
    writeFileSync(join(fake, 'global', 'pg_control'), control);
    const before = await keysUnder(storage, '');
    const e = await caught(
      runPgdataBackup({ dbUrl: pg.superuserUrl, storage, recipients: [recipient], pgdata: fake }),
    );
    expect(e.code).toBe(ErrorCodes.CLUSTER_MISMATCH);
    expect(e.message).toMatch(/system identifier 12345, not the server's/);
    expect(await keysUnder(storage, '')).toEqual(before);
    // auto falls back to pg_basebackup
    const r = await takeBaseBackup({
      hooks: { archived: cpArchived },
      dbUrl: pg.superuserUrl,
      storage,
      recipients: [recipient],
      pgdata: fake,
    });
    expect(r.manifest.tool.name).toBe('pg_basebackup');
    expect(r.manifest.formatVersion).toBe(1);
  }, 120_000);

  it('removes every part and ends the backup on the server when it fails', async () => {
    const before = await keysUnder(storage, '');
    const e = await caught(
      runPgdataBackup({
        dbUrl: pg.superuserUrl,
        storage,
        recipients: [recipient],
        parallel: 3,
        hooks: {
          archived: cpArchived,
          beforeStop: () => {
            throw new DbcrateError(ErrorCodes.STORAGE_IO, 'injected failure before pg_backup_stop');
          },
        },
      }),
    );
    expect(e.message).toMatch(/injected failure/);
    expect(await keysUnder(storage, '')).toEqual(before);
    // the session closed, so the server ended the backup: a new one starts and completes
    const r = await runPgdataBackup({
      hooks: { archived: cpArchived },
      dbUrl: pg.superuserUrl,
      storage,
      recipients: [recipient],
      parallel: 1,
    });
    expect(r.manifest.objects).toHaveLength(1);
  }, 120_000);

  it('refuses (E_INTEGRITY) and empties the target when a listed file is missing from the parts', async () => {
    const list = await listBaseBackups(
      storage,
      await pg.psql('SELECT system_identifier FROM pg_control_system()'),
    );
    const m = list.filter((x) => x.manifest?.formatVersion === 2).at(-1)!.manifest!;
    if (m.formatVersion !== 2) throw new Error('expected a v2 manifest');
    const forged = { ...m, files: [...m.files!, { path: 'not_there', size: 1, mtime: 0, part: 0 }] };
    const target = join(dir, 'forged');
    const e = await caught(restoreBaseBackup({ storage, manifest: forged, keys: [key], targetDir: target }));
    expect(e.code).toBe(ErrorCodes.INTEGRITY);
    expect(e.message).toMatch(/not_there \(missing/);
    await expect(readdir(target)).rejects.toThrow(/ENOENT/);
  }, 120_000);
});
