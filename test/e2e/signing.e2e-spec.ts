import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadRecipientKey } from '@dbcrate/crypto';
import { runBackup } from '@dbcrate/dump';
import { openStorage } from '@dbcrate/storage';
import {
  GpgHome,
  removeTestSigning,
  runCli,
  startPgCluster,
  testSigning,
  type PgCluster,
  type TestSigning,
} from '@dbcrate/testing';
import { checksums, generateKeys, PASSPHRASE, type KeyPair } from './e2e.fixture';

/**
 * Signed dumps (docs/signing.md). Anyone who can write to the bucket has the public key
 * and can make a dump that decrypts fine and matches its manifest: only the signature by
 * the producing host's key tells it apart. Such forgeries are refused by `restore`, listed
 * as untrusted by `snapshots`, and the real signature checks with stock gpg.
 */
describe('signed dumps (CLI)', () => {
  let pg: PgCluster;
  let keys: KeyPair;
  let root: string;
  let dest: string;
  let intruder: TestSigning;
  let gpg: GpgHome;
  let n = 0;
  const env = { E2E_PASSPHRASE: PASSPHRASE };

  const backup = async (db: string, extraEnv: NodeJS.ProcessEnv = {}) => {
    const r = await runCli(
      [
        'backup',
        '--db',
        pg.url(db),
        '--to',
        `file://${dest}`,
        '--recipient',
        keys.pub,
        '--database-id',
        'app',
        '--json',
      ],
      { env: extraEnv },
    );
    if (r.code !== 0) throw new Error(r.stderr);
    expect(r.code).toBe(0);
    return JSON.parse(r.stdout) as {
      snapshotId: string;
      manifest: string;
      signature: string;
      signer: string;
    };
  };
  const restore = async (snap: string, extra: string[] = [], extraEnv: NodeJS.ProcessEnv = {}) => {
    const target = await pg.createDatabase(`sig_target_${++n}`);
    const r = await runCli(
      [
        'restore',
        snap,
        '--from',
        `file://${dest}`,
        '--key',
        keys.priv,
        '--passphrase-env',
        'E2E_PASSPHRASE',
        '--database-id',
        'app',
        '--to',
        target,
        ...extra,
      ],
      { env: { ...env, ...extraEnv } },
    );
    return { ...r, target };
  };
  const tables = async (url: string) =>
    (
      await pg.psql(
        "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
        new URL(url).pathname.slice(1),
      )
    ).trim();

  beforeAll(async () => {
    pg = await startPgCluster();
    keys = await generateKeys('signing');
    intruder = await testSigning('intruder');
    gpg = new GpgHome();
    root = await mkdtemp(join(tmpdir(), 'dbcrate-e2e-signing-'));
    dest = join(root, 'dest');
    await pg.createDatabase('sig_real');
    await pg.psql(
      'CREATE TABLE accounts AS SELECT g AS id, g * 10 AS balance FROM generate_series(1, 500) g',
      'sig_real',
    );
    await pg.createDatabase('sig_evil');
    await pg.psql(
      'CREATE TABLE accounts AS SELECT g AS id, 0 AS balance FROM generate_series(1, 500) g; CREATE TABLE backdoor (x int)',
      'sig_evil',
    );
  });
  afterAll(async () => {
    await pg?.stop();
    removeTestSigning(intruder);
    gpg.remove();
    await rm(root, { recursive: true, force: true });
  });

  let real: { snapshotId: string; manifest: string; signature: string; signer: string };

  it('signs the manifest; gpg --verify checks it with the signer public key, without dbcrate', async () => {
    real = await backup('sig_real');
    expect(real.signature).toBe(`${real.manifest}.sig`);
    const manifestFile = join(dest, real.manifest);
    const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as {
      signer: string;
      object: { sha256: string };
    };
    expect(manifest.signer).toBe(real.signer);
    await gpg.import(readFileSync(process.env.DBCRATE_TRUST!, 'utf8'));
    const v = await gpg.run(['--verify', `${manifestFile}.sig`, manifestFile]);
    expect(v.stderr).toMatch(/Good signature/);
    expect(v.code).toBe(0);
    expect(v.stderr).toContain(real.signer);

    const r = await restore('latest');
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(await checksums(r.target)).toEqual(await checksums(pg.url('sig_real')));
  });

  it('refuses a forged dump (valid encryption, matching sha256, no signature) as latest and by id', async () => {
    // What an intruder with write access and the public key can do: a real dbcrate backup of
    // their own database, encrypted to the organisation key, manifest and all, just unsigned.
    const storage = await openStorage(`file://${dest}`);
    const forged = await runBackup({
      dbUrl: pg.url('sig_evil'),
      storage,
      recipients: [await loadRecipientKey(readFileSync(keys.pub, 'utf8'))],
      databaseId: 'app',
    });
    await storage.close();
    const latest = await restore('latest');
    expect(latest.code).toBe(10);
    expect(latest.stderr).toMatch(/E_UNTRUSTED/);
    expect(latest.stderr).toContain(forged.manifest.snapshotId);
    expect(latest.stderr).toContain(real.snapshotId); // the newest trusted one is named
    expect(await tables(latest.target)).toBe('');
    const byId = await restore(forged.manifest.snapshotId);
    expect(byId.code).toBe(10);
    expect(await tables(byId.target)).toBe('');

    const list = await runCli(['snapshots', '--from', `file://${dest}`, '--json']);
    expect(list.code).toBe(0);
    const rows = JSON.parse(list.stdout) as { snapshotId: string; status: string; signer?: string }[];
    expect(rows.find((x) => x.snapshotId === forged.manifest.snapshotId)?.status).toBe('untrusted');
    expect(rows.find((x) => x.snapshotId === real.snapshotId)).toMatchObject({
      status: 'complete',
      signer: real.signer,
    });

    // a signature added afterwards by a key nobody trusts changes nothing
    const sig = join(dest, `${forged.manifestKey}.sig`);
    writeFileSync(sig, readFileSync(join(dest, `${real.manifest}.sig`)));
    expect((await restore(forged.manifest.snapshotId)).code).toBe(10);
  });

  it('refuses a dump signed by a key that is not trusted', async () => {
    const other = await backup('sig_evil', { DBCRATE_SIGNING_KEY: intruder.keyFile });
    const r = await restore(other.snapshotId);
    expect(r.code).toBe(10);
    expect(r.stderr).toMatch(/not trusted/);
    expect(await tables(r.target)).toBe('');
    // trusting it too (e.g. during a key change) accepts it
    const both = await restore(other.snapshotId, [], {
      DBCRATE_TRUST: `${process.env.DBCRATE_TRUST},${intruder.pubFile}`,
    });
    expect(both.code).toBe(0);
    expect(await tables(both.target)).toBe('accounts,backdoor');
  });

  it('without --trust or --allow-unsigned, restore and snapshots say what to do', async () => {
    const r = await restore(real.snapshotId, [], { DBCRATE_TRUST: '' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no trusted signer key given/);
    expect(r.stderr).toMatch(/--trust FILE/);
    expect(r.stderr).toMatch(/--allow-unsigned/);
    const l = await runCli(['snapshots', '--from', `file://${dest}`], { env: { DBCRATE_TRUST: '' } });
    expect(l.code).toBe(2);
  });

  it('--allow-unsigned restores an archive made before signing', async () => {
    const old = join(root, 'old');
    const storage = await openStorage(`file://${old}`);
    const made = await runBackup({
      dbUrl: pg.url('sig_real'),
      storage,
      recipients: [await loadRecipientKey(readFileSync(keys.pub, 'utf8'))],
      databaseId: 'app',
    });
    await storage.close();
    expect(
      readdirSync(join(old, 'app', 'dumps', made.manifest.startedAt.slice(0, 10))).some((f) =>
        f.endsWith('.sig'),
      ),
    ).toBe(false);
    const target = await pg.createDatabase(`sig_target_${++n}`);
    const args = [
      'restore',
      'latest',
      '--from',
      `file://${old}`,
      '--key',
      keys.priv,
      '--passphrase-env',
      'E2E_PASSPHRASE',
      '--to',
      target,
    ];
    expect((await runCli(args, { env })).code).toBe(10);
    const ok = await runCli([...args, '--allow-unsigned'], { env: { ...env, DBCRATE_TRUST: '' } });
    expect(ok.stderr).not.toMatch(/error/);
    expect(ok.code).toBe(0);
    expect(await checksums(target)).toEqual(await checksums(pg.url('sig_real')));
  });

  it('keys generate-signing makes a protected 0600 key that backup signs with and restore trusts', async () => {
    const kd = join(root, 'host-keys');
    const g = await runCli(
      ['keys', 'generate-signing', '--name', 'db9', '--out', kd, '--passphrase-env', 'SIGN_PASS'],
      {
        env: { SIGN_PASS: 'sign-pass-123' },
      },
    );
    expect(g.code).toBe(0);
    const fpr = /fingerprint ([0-9A-F]{40})/.exec(g.stdout)![1];
    expect(statSync(join(kd, 'db9.sign.key.asc')).mode & 0o777).toBe(0o600);
    const args = [
      'backup',
      '--db',
      pg.url('sig_real'),
      '--to',
      `file://${dest}`,
      '--recipient',
      keys.pub,
      '--database-id',
      'app9',
      '--json',
      '--signing-key',
      join(kd, 'db9.sign.key.asc'),
    ];
    const locked = await runCli(args);
    expect(locked.code).toBe(5);
    expect(locked.stderr).toMatch(/--signing-passphrase-env/);
    const b = await runCli([...args, '--signing-passphrase-env', 'SIGN_PASS'], {
      env: { SIGN_PASS: 'sign-pass-123' },
    });
    expect(b.code).toBe(0);
    expect(JSON.parse(b.stdout)).toMatchObject({ signer: fpr });
    const target = await pg.createDatabase(`sig_target_${++n}`);
    const r = await runCli(
      [
        'restore',
        'latest',
        '--from',
        `file://${dest}`,
        '--database-id',
        'app9',
        '--key',
        keys.priv,
        '--passphrase-env',
        'E2E_PASSPHRASE',
        '--to',
        target,
        '--trust',
        join(kd, 'db9.sign.pub.asc'),
      ],
      { env: { ...env, DBCRATE_TRUST: '' } },
    );
    expect(r.code).toBe(0);
    // a producer without a signing key is refused before it connects
    const none = await runCli(args.slice(0, -2), { env: { DBCRATE_SIGNING_KEY: '' } });
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/signing-key/);
  });

  it('keys generate writes nothing when one of its two files cannot be written', async () => {
    const kd = join(root, 'org-keys');
    mkdirSync(kd);
    writeFileSync(join(kd, 'org.key.asc'), 'OLD PRIVATE KEY');
    const r = await runCli(['keys', 'generate', '--name', 'org', '--out', kd]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/already exists.*nothing was written/);
    expect(readdirSync(kd)).toEqual(['org.key.asc']);
    expect(readFileSync(join(kd, 'org.key.asc'), 'utf8')).toBe('OLD PRIVATE KEY');
  });
});
