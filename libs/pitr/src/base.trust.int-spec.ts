/**
 * Signed base backups (docs/signing.md): a base backup anyone with write access and the
 * public key could make (valid encryption, recomputed sha256, no signature by a trusted
 * signer) is refused by recover; and whatever an archive holds, extraction creates only
 * plain files, directories and inside symlinks, no device or setuid file, even as root.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { getCodec } from '@dbcrate/compression';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import {
  generateKeyPair,
  getCipher,
  loadDecryptionKey,
  loadRecipientKey,
  signDetached,
  type DecryptionKey,
  type RecipientKey,
} from '@dbcrate/crypto';
import { snapshotIdFor } from '@dbcrate/plumbing';
import { openStorage, type Storage } from '@dbcrate/storage';
import {
  GpgHome,
  removeTestSigning,
  runCli,
  startPgCluster,
  testSigning,
  type PgCluster,
  type TestSigning,
} from '@dbcrate/testing';
import { listBaseBackups, restoreBaseBackup, usableBaseBackups } from './base.backups';
import { serializeBaseManifest, type BaseManifest, type BaseManifestV1 } from './base.manifest';
import { runBaseBackup, type BaseBackupResult } from './basebackup.pipeline';
import { baseBackupKeys, clusterKey } from './pitr.layout';
import { buildTar } from './tar.guard.fixture';
import { restoreWindows } from './windows';

async function caught(p: Promise<unknown>): Promise<DbcrateError> {
  try {
    await p;
  } catch (e) {
    return e as DbcrateError;
  }
  throw new Error('expected a rejection');
}

describe('signed base backups', () => {
  let pg: PgCluster;
  let dir: string;
  let dest: string;
  let storage: Storage;
  let recipient: RecipientKey;
  let key: DecryptionKey;
  let signer: TestSigning;
  let real: BaseBackupResult<BaseManifestV1>;
  let keyFile: string;

  /** What an intruder can store: `tar` compressed and encrypted to the organisation key, with a matching manifest. */
  async function forge(databaseId: string, tar: Buffer, sign: boolean): Promise<BaseManifest> {
    const backupId = snapshotIdFor(new Date(Date.now() + 60_000));
    const keys = baseBackupKeys(databaseId, backupId);
    const compressed = await getCodec('zstd').compressBuffer(tar, { level: 3, threads: 0 });
    const sealed = Buffer.from(await getCipher('openpgp').encryptBuffer(compressed, [recipient]));
    await storage.put(keys.dataKey, Readable.from([sealed]));
    const m: BaseManifestV1 = {
      ...real.manifest,
      databaseId,
      backupId,
      signer: undefined,
      object: {
        key: keys.dataKey,
        storedSize: sealed.length,
        sha256: createHash('sha256').update(sealed).digest('hex'),
        plaintextSize: tar.length,
      },
    };
    const body = serializeBaseManifest(m);
    if (sign)
      await storage.put(
        `${keys.manifestKey}.sig`,
        Readable.from([Buffer.from(await signDetached(body, signer.key))]),
      );
    await storage.put(keys.manifestKey, Readable.from([body]));
    return m;
  }

  const hostile = () =>
    buildTar([
      { name: './', type: '5' },
      { name: './PG_VERSION', data: '15\n' },
      { name: './null', type: '3', devmajor: 1, devminor: 3 },
      { name: './suid-shell', mode: 0o4755, data: '#!/bin/sh\nexec /bin/sh -p\n' },
    ]);

  beforeAll(async () => {
    pg = await startPgCluster({
      settings: { archive_mode: 'on', archive_command: 'true', wal_level: 'replica' },
    });
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-pitr-trust-'));
    dest = join(dir, 'dest');
    await mkdir(dest);
    storage = await openStorage(`file://${dest}`);
    const pair = await generateKeyPair({ name: 'trust test' });
    recipient = await loadRecipientKey(pair.publicArmored);
    key = await loadDecryptionKey(pair.privateArmored);
    keyFile = join(dir, 'org.key.asc');
    writeFileSync(keyFile, pair.privateArmored, { mode: 0o600 });
    signer = await testSigning('base-signer');
    real = await runBaseBackup({
      dbUrl: pg.superuserUrl,
      storage,
      recipients: [recipient],
      signingKey: signer.key,
    });
  });

  afterAll(async () => {
    await storage?.close();
    await pg?.stop();
    if (signer) removeTestSigning(signer);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('signs the manifest: listed with its signer, and gpg --verify checks it', async () => {
    expect(real.signatureKey).toBe(`${real.manifestKey}.sig`);
    expect(real.manifest.signer).toBe(signer.fingerprint);
    const list = await listBaseBackups(storage, real.manifest.databaseId, { trust: signer.trust });
    expect(list.map((e) => [e.status, e.signer])).toEqual([['complete', signer.fingerprint]]);
    const gpg = new GpgHome();
    try {
      await gpg.import(signer.publicArmored);
      const v = await gpg.run(['--verify', join(dest, real.signatureKey!), join(dest, real.manifestKey)]);
      expect(v.stderr).toMatch(/Good signature/);
      expect(v.code).toBe(0);
    } finally {
      gpg.remove();
    }
  });

  it('refuses a forged base backup (valid encryption, matching sha256, unsigned)', async () => {
    const id = real.manifest.databaseId;
    const forged = await forge(id, hostile(), false);
    const list = await listBaseBackups(storage, id, { trust: signer.trust });
    expect(list.find((e) => e.backupId === forged.backupId)).toMatchObject({ status: 'untrusted' });
    // asked for by id: refused; otherwise only the signed one is used
    const e = await caught(
      usableBaseBackups(storage, id, { trust: signer.trust, backupId: forged.backupId }),
    );
    expect(e.code).toBe(ErrorCodes.UNTRUSTED);
    expect(e.exitCode).toBe(10);
    expect((await usableBaseBackups(storage, id, { trust: signer.trust })).map((m) => m.backupId)).toEqual([
      real.manifest.backupId,
    ]);
    // windows lists it as untrusted and builds no window on it
    const w = await restoreWindows(storage, id, { trust: signer.trust });
    expect(w.untrusted?.map((u) => u.backupId)).toContain(forged.backupId);
    expect(w.baseBackups.map((b) => b.backupId)).toEqual([real.manifest.backupId]);
    // signed by someone else: refused too
    const other = await testSigning('other-signer');
    try {
      expect(
        (await listBaseBackups(storage, id, { trust: other.trust })).every((x) => x.status === 'untrusted'),
      ).toBe(true);
    } finally {
      removeTestSigning(other);
    }
  });

  it('dbcrate recover refuses a database whose only base backup is forged, and one named by --base-backup', async () => {
    await storage.put(
      clusterKey('forged'),
      Readable.from([readFileSync(join(dest, clusterKey(real.manifest.databaseId)))]),
    );
    const forged = await forge('forged', hostile(), false);
    const target = join(dir, 'recovered');
    const args = [
      'recover',
      '--from',
      `file://${dest}`,
      '--key',
      keyFile,
      '--target-dir',
      target,
      '--latest',
    ];
    const r = await runCli([...args, '--database-id', 'forged'], { env: { DBCRATE_TRUST: signer.pubFile } });
    expect(r.stderr).toMatch(/E_UNTRUSTED/);
    expect(r.stderr).toContain(forged.backupId);
    expect(r.code).toBe(10);
    expect(existsSync(target)).toBe(false);
    const beside = await forge(real.manifest.databaseId, hostile(), false);
    const byId = await runCli(
      [...args, '--database-id', real.manifest.databaseId, '--base-backup', beside.backupId],
      {
        env: { DBCRATE_TRUST: signer.pubFile },
      },
    );
    expect(byId.stderr).toMatch(/E_UNTRUSTED/);
    expect(byId.code).toBe(10);
    expect(existsSync(target)).toBe(false);
  });

  it('extracts no device node and no setuid file, even from a validly signed archive, even as root', async () => {
    const m = await forge('hostile', hostile(), true);
    expect(
      (await usableBaseBackups(storage, 'hostile', { trust: signer.trust })).map((x) => x.backupId),
    ).toEqual([m.backupId]);
    for (const created of [false, true]) {
      const target = join(dir, `hostile-${String(created)}`);
      if (created) await mkdir(target);
      const e = await caught(restoreBaseBackup({ storage, manifest: m, keys: [key], targetDir: target }));
      expect(e.code).toBe(ErrorCodes.INTEGRITY);
      expect(e.message).toMatch(/character device/);
      if (created) expect(readdirSync(target)).toEqual([]);
      else expect(existsSync(target)).toBe(false);
    }
    // and the guard is what stopped it: plain GNU tar, as root, would have made both
    const plain = join(dir, 'plain-tar');
    await mkdir(plain);
    const { execFileSync } = await import('node:child_process');
    execFileSync('tar', ['-x', '-p', '-f', '-', '-C', plain], { input: hostile() });
    if (process.getuid?.() === 0) {
      expect(lstatSync(join(plain, 'null')).isCharacterDevice()).toBe(true);
      expect(lstatSync(join(plain, 'suid-shell')).mode & 0o4000).toBe(0o4000);
    }
  });
});
