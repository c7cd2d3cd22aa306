/**
 * Physical base backups against a real PostgreSQL cluster (archive_mode on), stored in a
 * local folder: the manifest, GnuPG + zstd + tar opening the object without dbcrate,
 * restoreBaseBackup and its refusals, and the server settings basebackup refuses.
 */
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { getCodec } from '@dbcrate/compression';
import { DbcrateError, ErrorCodes, MeterStream } from '@dbcrate/core';
import {
  generateKeyPair,
  getCipher,
  loadDecryptionKey,
  loadRecipientKey,
  type DecryptionKey,
  type RecipientKey,
} from '@dbcrate/crypto';
import { openStorage, type Storage } from '@dbcrate/storage';
import { runCli, startPgCluster, type PgCluster } from '@dbcrate/testing';
import { listBaseBackups, restoreBaseBackup } from './base.backups';
import { baseStoredSize, parseBaseManifest, type BaseManifestV1 } from './base.manifest';
import { runBaseBackup, type BaseBackupResult } from './basebackup.pipeline';
import { baseBackupKeys, ensureClusterIdentity, readClusterIdentity } from './pitr.layout';
import { parseLsn, segmentOfLsn, walFileName } from './wal.names';

const execFileP = promisify(execFile);
const PASSPHRASE = 'base backup test passphrase';

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

describe('physical base backups', () => {
  let pg: PgCluster;
  let dir: string;
  let dest: string;
  let storage: Storage;
  let recipient: RecipientKey;
  let privateArmored: string;
  let key: DecryptionKey;
  let sysid: string;
  let first: BaseBackupResult<BaseManifestV1>;

  beforeAll(async () => {
    pg = await startPgCluster({
      settings: { archive_mode: 'on', archive_command: 'true', wal_level: 'replica' },
    });
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-pitr-base-'));
    dest = join(dir, 'dest');
    await mkdir(dest);
    storage = await openStorage(`file://${dest}`);
    const pair = await generateKeyPair({ name: 'base backup test', passphrase: PASSPHRASE });
    privateArmored = pair.privateArmored;
    recipient = await loadRecipientKey(pair.publicArmored);
    key = await loadDecryptionKey(pair.privateArmored, PASSPHRASE);
    await pg.psql(
      `CREATE TABLE t (id int PRIMARY KEY, v text);
       INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 20000) i;`,
    );
    sysid = await pg.psql('SELECT system_identifier FROM pg_control_system()');
    first = await runBaseBackup({ dbUrl: pg.superuserUrl, storage, recipients: [recipient] });
  });

  afterAll(async () => {
    await storage?.close();
    await pg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('writes data and a manifest that describes it', async () => {
    const m = first.manifest;
    expect(m.databaseId).toBe(sysid);
    expect(m.server.systemIdentifier).toBe(sysid);
    expect(m.backupId).toMatch(/^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{8}$/);
    expect(first).toMatchObject(baseBackupKeys(sysid, m.backupId));
    expect(m.kind).toBe('physical');
    expect(m.timeline).toBe(1);
    const start = parseLsn(m.startLsn);
    const stop = parseLsn(m.stopLsn);
    expect(stop).toBeGreaterThanOrEqual(start);
    expect(m.walSegmentSize).toBe(16 * 1024 * 1024);
    expect(m.startWalFile).toBe(walFileName(1, segmentOfLsn(start, m.walSegmentSize), m.walSegmentSize));
    expect(m.stopWalFile).toBe(walFileName(1, segmentOfLsn(stop - 1n, m.walSegmentSize), m.walSegmentSize));
    expect(m.tool.name).toBe('pg_basebackup');
    expect(m.server.major).toBe(15);
    expect(m.tablespaces.map((t) => t.name)).toEqual(['pg_default', 'pg_global']);
    expect(m.encryption.recipients.map((r) => r.fingerprint)).toEqual([recipient.fingerprint]);
    expect(Date.parse(m.finishedAt)).toBeGreaterThanOrEqual(Date.parse(m.startedAt));

    // the stored manifest is the returned one, and the sizes and hash are the stored object's
    const stored = parseBaseManifest(await readFile(join(dest, first.manifestKey)), first.manifestKey);
    expect(stored).toEqual(m);
    const data = await readFile(join(dest, first.dataKey));
    expect(m.object.storedSize).toBe(data.length);
    expect(m.object.sha256).toBe(createHash('sha256').update(data).digest('hex'));
    expect(m.object.plaintextSize).toBeGreaterThan(data.length); // the tar compresses well

    // the server names the start segment the same way
    const history = await pg.psql(
      `SELECT pg_walfile_name('${m.startLsn}') || ' ' || (SELECT timeline_id FROM pg_control_checkpoint())`,
    );
    expect(history).toBe(`${m.startWalFile} 1`);

    const cluster = await readClusterIdentity(storage, sysid);
    expect(cluster).toMatchObject({ systemIdentifier: sysid, walSegmentSize: 16 * 1024 * 1024 });
  });

  it('opens without dbcrate: gpg --decrypt | zstd -d | tar -t', async () => {
    const gnupg = mkdtempSync(join(tmpdir(), 'dbcrate-pitr-gnupg-'));
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
      const listing = execFileSync(
        'bash',
        [
          '-o',
          'pipefail',
          '-c',
          'gpg "$@" --quiet --decrypt "$DATA" | zstd -d -c | tar -t -f -',
          'gpg',
          ...gpg,
        ],
        { env: { ...process.env, DATA: join(dest, first.dataKey) }, maxBuffer: 64 * 1024 * 1024 },
      )
        .toString()
        .split('\n');
      expect(listing).toContain('PG_VERSION');
      expect(listing).toContain('global/pg_control');
      expect(listing).toContain('backup_label');
      expect(listing).toContain('backup_manifest');
    } finally {
      execFileSync('gpgconf', ['--homedir', gnupg, '--kill', 'gpg-agent'], { stdio: 'ignore' });
      await rm(gnupg, { recursive: true, force: true });
    }
  });

  it('lists complete base backups oldest first and marks unfinished ones', async () => {
    const second = await runBaseBackup({ dbUrl: pg.superuserUrl, storage, recipients: [recipient] });
    // data without a manifest: a backup that never finished
    const unfinished = baseBackupKeys(sysid, '20000101T000000.000Z');
    await storage.put(unfinished.dataKey, Readable.from([Buffer.from('partial')]));
    try {
      const list = await listBaseBackups(storage, sysid);
      expect(list.map((e) => [e.backupId, e.status])).toEqual([
        ['20000101T000000.000Z', 'incomplete'],
        [first.manifest.backupId, 'complete'],
        [second.manifest.backupId, 'complete'],
      ]);
      expect(list[0].reason).toMatch(/no manifest/);
      expect(list[1].manifest).toEqual(first.manifest);
      expect(parseLsn(second.manifest.startLsn)).toBeGreaterThan(parseLsn(first.manifest.stopLsn));
      expect(await listBaseBackups(storage, 'no-such-db')).toEqual([]);
    } finally {
      await storage.delete(unfinished.dataKey);
      await storage.delete(second.manifestKey);
      await storage.delete(second.dataKey);
    }
  });

  it('restores into a new directory, mode 0700', async () => {
    const target = join(dir, 'restored-new');
    const r = await restoreBaseBackup({ storage, manifest: first.manifest, keys: [key], targetDir: target });
    expect(r.targetDir).toBe(target);
    expect(readFileSync(join(target, 'PG_VERSION'), 'utf8').trim()).toBe('15');
    expect(existsSync(join(target, 'global', 'pg_control'))).toBe(true);
    expect(readFileSync(join(target, 'backup_label'), 'utf8')).toContain(
      `START WAL LOCATION: ${first.manifest.startLsn} (file ${first.manifest.startWalFile})`,
    );
    expect(statSync(target).mode & 0o777).toBe(0o700);
    // as root, the directory belongs to the user the archive names (postgres), as its contents do
    expect(statSync(target).uid).toBe(statSync(join(target, 'PG_VERSION')).uid);
    // the pg_control in the backup is this cluster's
    expect(
      readFileSync(join(target, 'global', 'pg_control'))
        .readBigUInt64LE(0)
        .toString(),
    ).toBe(sysid);
  });

  it('restores into an existing empty directory and tightens its mode', async () => {
    const target = join(dir, 'restored-empty');
    await mkdir(target, { mode: 0o755 });
    chmodSync(target, 0o755);
    await restoreBaseBackup({ storage, manifest: first.manifest, keys: [key], targetDir: target });
    expect(existsSync(join(target, 'PG_VERSION'))).toBe(true);
    expect(statSync(target).mode & 0o777).toBe(0o700);
  });

  it('refuses a non-empty target and a missing parent, touching nothing', async () => {
    const target = join(dir, 'not-empty');
    await mkdir(target);
    await writeFile(join(target, 'keep.txt'), 'mine');
    const e = await caught(
      restoreBaseBackup({ storage, manifest: first.manifest, keys: [key], targetDir: target }),
    );
    expect(e.code).toBe(ErrorCodes.TARGET_NOT_EMPTY);
    expect(e.message).toContain('keep.txt');
    expect(await readdir(target)).toEqual(['keep.txt']);

    const orphan = join(dir, 'no-such-parent', 'data');
    const e2 = await caught(
      restoreBaseBackup({ storage, manifest: first.manifest, keys: [key], targetDir: orphan }),
    );
    expect(e2.code).toBe(ErrorCodes.USAGE);
    expect(e2.message).toMatch(/parent directory .* does not exist/);
    expect(existsSync(join(dir, 'no-such-parent'))).toBe(false);
  });

  it('refuses a key the backup was not encrypted to, before downloading', async () => {
    const other = await generateKeyPair({ name: 'someone else' });
    const e = await caught(
      restoreBaseBackup({
        storage,
        manifest: first.manifest,
        keys: [await loadDecryptionKey(other.privateArmored)],
        targetDir: join(dir, 'wrong-key'),
      }),
    );
    expect(e.code).toBe(ErrorCodes.WRONG_KEY);
    expect(existsSync(join(dir, 'wrong-key'))).toBe(false);
  });

  it('refuses a changed stored object before tar runs', async () => {
    const file = join(dest, first.dataKey);
    const original = await readFile(file);
    const flipped = Buffer.from(original);
    flipped[Math.floor(flipped.length / 2)] ^= 0x01;
    await writeFile(file, flipped);
    const target = join(dir, 'restored-flipped');
    try {
      const e = await caught(
        restoreBaseBackup({ storage, manifest: first.manifest, keys: [key], targetDir: target }),
      );
      expect(e.code).toBe(ErrorCodes.INTEGRITY);
      expect(e.message).toMatch(/sha256/);
      // the target is only created once the object has passed the check
      expect(existsSync(target)).toBe(false);
    } finally {
      await writeFile(file, original);
    }
  });

  it('removes what it extracted when extraction fails', async () => {
    // A truncated-then-"recorded" object: the manifest agrees with the stored bytes, so
    // the check passes, but the OpenPGP integrity check fails at the end of the stream.
    const prefix = baseBackupKeys('truncated', first.manifest.backupId);
    const original = await readFile(join(dest, first.dataKey));
    const cut = original.subarray(0, original.length - 1000);
    await storage.put(prefix.dataKey, Readable.from([cut]));
    const manifest = {
      ...first.manifest,
      databaseId: 'truncated',
      object: {
        ...first.manifest.object,
        key: prefix.dataKey,
        storedSize: cut.length,
        sha256: createHash('sha256').update(cut).digest('hex'),
      },
    };
    const target = join(dir, 'restored-truncated');
    await mkdir(target);
    try {
      const e = await caught(restoreBaseBackup({ storage, manifest, keys: [key], targetDir: target }));
      expect([ErrorCodes.INTEGRITY, ErrorCodes.CODEC]).toContain(e.code);
      expect(await readdir(target)).toEqual([]); // emptied, but kept: it existed before
    } finally {
      await storage.delete(prefix.dataKey);
    }
  });

  it('removes a half-extracted directory when tar fails, and the directory it created', async () => {
    // A backup whose tar stream ends halfway: every check passes, tar extracts the first
    // half, then the stream fails (the tar guard sees the cut entry); nothing may stay behind.
    const plain: Buffer[] = [];
    await pipeline(
      await storage.get(first.dataKey),
      getCipher('openpgp').decryptor([key]),
      getCodec('zstd').decompressor(),
      new Writable({
        write(c: Buffer, _e, cb) {
          plain.push(c);
          cb();
        },
      }),
    );
    const tarBytes = Buffer.concat(plain);
    const half = tarBytes.subarray(0, Math.floor(tarBytes.length / 2));
    const keys = baseBackupKeys('half-tar', first.manifest.backupId);
    const sealed = new MeterStream();
    const put = storage.put(keys.dataKey, sealed);
    await pipeline(
      Readable.from([half]),
      getCodec('zstd').compressor(),
      getCipher('openpgp').encryptor([recipient]),
      sealed,
    );
    await put;
    const manifest = {
      ...first.manifest,
      databaseId: 'half-tar',
      object: {
        ...first.manifest.object,
        key: keys.dataKey,
        storedSize: sealed.bytes,
        sha256: sealed.sha256(),
      },
    };
    const target = join(dir, 'restored-half');
    try {
      const e = await caught(restoreBaseBackup({ storage, manifest, keys: [key], targetDir: target }));
      expect(e.code).toBe(ErrorCodes.INTEGRITY);
      expect(e.message).toMatch(/ends in the middle of an entry/);
      expect(existsSync(target)).toBe(false);
    } finally {
      await storage.delete(keys.dataKey);
    }
  });

  it('stores under --database-id and refuses an id bound to another cluster', async () => {
    const r = await runBaseBackup({
      dbUrl: pg.superuserUrl,
      storage,
      recipients: [recipient],
      databaseId: 'orders-prod',
    });
    expect(r.dataKey).toBe(`orders-prod/base/${r.manifest.backupId}/base.tar.zst.pgp`);
    expect(r.manifest.databaseId).toBe('orders-prod');
    expect((await readClusterIdentity(storage, 'orders-prod'))?.systemIdentifier).toBe(sysid);

    await ensureClusterIdentity(storage, 'someone-else', {
      systemIdentifier: '1234567890',
      walSegmentSize: 16 * 1024 * 1024,
    });
    const e = await caught(
      runBaseBackup({ dbUrl: pg.superuserUrl, storage, recipients: [recipient], databaseId: 'someone-else' }),
    );
    expect(e.code).toBe(ErrorCodes.CLUSTER_MISMATCH);
    expect(await keysUnder(storage, 'someone-else/')).toEqual(['someone-else/cluster.json']);

    const bad = await caught(
      runBaseBackup({ dbUrl: pg.superuserUrl, storage, recipients: [recipient], databaseId: '../x' }),
    );
    expect(bad.code).toBe(ErrorCodes.CONFIG);
  });

  it('refuses a cluster with a user tablespace, naming it and its location', async () => {
    const location = mkdtempSync(join(tmpdir(), 'dbcrate-pitr-ts-'));
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    chownSync(location, uid, gid);
    chmodSync(location, 0o700);
    await pg.psql(`CREATE TABLESPACE archive_ts LOCATION '${location}'`);
    try {
      const before = await keysUnder(storage, '');
      const e = await caught(
        runBaseBackup({ dbUrl: pg.superuserUrl, storage, recipients: [recipient], databaseId: 'with-ts' }),
      );
      expect(e.code).toBe(ErrorCodes.CONFIG);
      expect(e.message).toContain('archive_ts');
      expect(e.message).toContain(location);
      expect(e.hint).toMatch(/SET TABLESPACE pg_default/);
      expect(await keysUnder(storage, '')).toEqual(before);
    } finally {
      await pg.psql('DROP TABLESPACE archive_ts');
      await rm(location, { recursive: true, force: true });
    }
  });

  it('refuses without recipients', async () => {
    const e = await caught(runBaseBackup({ dbUrl: pg.superuserUrl, storage, recipients: [] }));
    expect(e.code).toBe(ErrorCodes.CONFIG);
  });

  it('deletes the data object and reports the cause when pg_basebackup fails', async () => {
    await pg.psql(`CREATE ROLE no_repl LOGIN PASSWORD 'pw-no-repl'`);
    try {
      const url = `postgres://no_repl:pw-no-repl@127.0.0.1:${pg.port}/postgres`;
      await pg.psql('GRANT EXECUTE ON FUNCTION pg_control_system() TO no_repl');
      const e = await caught(
        runBaseBackup({ dbUrl: url, storage, recipients: [recipient], databaseId: 'no-repl' }),
      );
      expect(e.code).toBe(ErrorCodes.DB_TOOL_FAILED);
      expect(e.message).toMatch(/pg_basebackup/);
      expect(e.hint).toMatch(/REPLICATION/);
      expect(e.message).not.toContain('pw-no-repl');
      expect(await keysUnder(storage, 'no-repl/')).toEqual(['no-repl/cluster.json']);
    } finally {
      await pg.psql('DROP OWNED BY no_repl; DROP ROLE no_repl');
    }
  });

  // This server archives into its own folder, not the destination: pgdata (the default here)
  // would wait for the backup's last WAL file in the destination, pg_basebackup does not.
  it('runs as `dbcrate basebackup --method pg_basebackup --json`', async () => {
    const pubFile = join(dir, 'org.pub.asc');
    await writeFile(pubFile, recipient.armored);
    const r = await runCli([
      'basebackup',
      '--method',
      'pg_basebackup',
      '--db',
      pg.superuserUrl,
      '--to',
      `file://${dest}`,
      '--recipient',
      pubFile,
      '--database-id',
      'via-cli',
      '--json',
    ]);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({ databaseId: 'via-cli', timeline: 1 });
    expect(out.backupId).toMatch(/^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{8}$/);
    expect(parseLsn(out.stopLsn as string)).toBeGreaterThanOrEqual(parseLsn(out.startLsn as string));
    const list = await listBaseBackups(storage, 'via-cli');
    expect(list.map((e) => [e.backupId, e.status])).toEqual([[out.backupId, 'complete']]);
    expect(baseStoredSize(list[0].manifest!)).toBe(out.storedBytes);
    expect(r.stdout + r.stderr).not.toContain(pg.password);
  });
});

describe('servers a base backup would be useless for', () => {
  let pg: PgCluster;
  let dir: string;
  let storage: Storage;
  let recipient: RecipientKey;

  beforeAll(async () => {
    pg = await startPgCluster(); // archive_mode off, the default
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-pitr-base-off-'));
    storage = await openStorage(`file://${dir}`);
    recipient = await loadRecipientKey((await generateKeyPair({ name: 'x' })).publicArmored);
  });

  afterAll(async () => {
    await storage?.close();
    await pg?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('refuses archive_mode = off before writing anything', async () => {
    const e = await caught(runBaseBackup({ dbUrl: pg.superuserUrl, storage, recipients: [recipient] }));
    expect(e.code).toBe(ErrorCodes.CONFIG);
    expect(e.message).toMatch(/archive_mode is off/);
    expect(e.hint).toMatch(/archive_mode = on/);
    expect(e.hint).toMatch(/dbcrate wal-push %p/);
    expect(await readdir(dir)).toEqual([]);
  });

  it('refuses archive_mode = on with an empty archive_command', async () => {
    await pg.psql(`ALTER SYSTEM SET archive_mode = 'on'`);
    const pgCtl = [
      join(pg.binDir, 'pg_ctl'),
      'restart',
      '-D',
      pg.dataDir,
      '-w',
      '-m',
      'fast',
      '-l',
      pg.logFile,
    ];
    if (process.getuid?.() === 0) await execFileP('runuser', ['-u', 'postgres', '--', ...pgCtl]);
    else await execFileP(pgCtl[0], pgCtl.slice(1));
    expect(await pg.psql('SHOW archive_mode')).toBe('on');
    const e = await caught(runBaseBackup({ dbUrl: pg.superuserUrl, storage, recipients: [recipient] }));
    expect(e.code).toBe(ErrorCodes.CONFIG);
    expect(e.message).toMatch(/archive_command is empty/);
    expect(await readdir(dir)).toEqual([]);
    expect((await stat(dir)).isDirectory()).toBe(true);
  });
});
