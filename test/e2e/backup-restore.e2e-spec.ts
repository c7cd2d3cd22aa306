import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  runCli,
  sampleDatabase,
  startPgCluster,
  startS3rver,
  startSshd,
  transcript,
  type PgCluster,
  type S3rverHarness,
  type SshdHarness,
} from '@dbcrate/testing';
import { checksums, generateKeys, PASSPHRASE, type KeyPair } from './e2e.fixture';

/**
 * The user's main job, through the CLI, against real services: back up a database to a
 * folder, to S3 (s3rver) and to SFTP (a real sshd); list; restore into an empty database;
 * every table identical. Plus the escape hatch: gpg | zstd | pg_restore without dbcrate.
 */
describe('backup and restore round trip', () => {
  let pg: PgCluster;
  let s3: S3rverHarness;
  let sshd: SshdHarness;
  let keys: KeyPair;
  let folder: string;
  let source: string;
  let expected: unknown[];
  const s3Env = () => ({ AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey });

  beforeAll(async () => {
    pg = await startPgCluster();
    await pg.createDatabase('e2e_source');
    source = pg.url('e2e_source');
    await sampleDatabase(source, { rows: 20000 });
    expected = await checksums(source);
    keys = await generateKeys('e2e-org');
    folder = await mkdtemp(join(tmpdir(), 'dbcrate-e2e-dest-'));
    s3 = await startS3rver({ buckets: ['e2e-roundtrip'] });
    sshd = await startSshd();
  });

  afterAll(async () => {
    await Promise.allSettled([
      pg?.stop(),
      s3?.stop(),
      sshd?.stop(),
      folder && rm(folder, { recursive: true, force: true }),
    ]);
  });

  const destinations: Array<[string, () => string, () => NodeJS.ProcessEnv]> = [
    ['local folder', () => `file://${folder}`, () => ({})],
    ['S3 (s3rver)', () => s3.url('backups/prod', 'e2e-roundtrip'), s3Env],
    ['SFTP (sshd)', () => sshd.url('backups'), () => ({})],
  ];

  it.each(destinations)('round trips through %s', async (name, dest, env) => {
    const b = await runCli(
      ['backup', '--db', source, '--to', dest(), '--recipient', keys.pub, '--database-id', 'shop'],
      {
        env: env(),
      },
    );
    expect(b.stderr).not.toContain('error');
    expect(b.code).toBe(0);
    const snapshotId = b.stdout.trim();
    expect(snapshotId).toMatch(/^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{8}$/);
    // progress is JSON lines when stderr is not a terminal
    expect(b.stderr).toMatch(/"event":"done","phase":"backup"/);

    const list = await runCli(['snapshots', '--from', dest(), '--json'], { env: env() });
    expect(list.code).toBe(0);
    const rows = JSON.parse(list.stdout) as Array<{
      snapshotId: string;
      status: string;
      recipients: string[];
    }>;
    const row = rows.find((r) => r.snapshotId === snapshotId);
    expect(row?.status).toBe('complete');
    expect(row?.recipients).toEqual([keys.fingerprint]);

    const target = `e2e_rt_${name.replace(/\W+/g, '_').toLowerCase()}`;
    await pg.createDatabase(target);
    const r = await runCli(
      [
        'restore',
        snapshotId,
        '--from',
        dest(),
        '--key',
        keys.priv,
        '--passphrase-env',
        'E2E_PASSPHRASE',
        '--to',
        pg.url(target),
        '--database-id',
        'shop',
      ],
      { env: { ...env(), E2E_PASSPHRASE: PASSPHRASE } },
    );
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(await checksums(pg.url(target))).toEqual(expected);
  });

  it('restores "latest" with --jobs 2 (spooled) identically', async () => {
    await pg.createDatabase('e2e_rt_jobs');
    const r = await runCli(
      [
        'restore',
        'latest',
        '--from',
        `file://${folder}`,
        '--key',
        keys.priv,
        '--passphrase-env',
        'E2E_PASSPHRASE',
        '--to',
        pg.url('e2e_rt_jobs'),
        '--jobs',
        '2',
      ],
      { env: { E2E_PASSPHRASE: PASSPHRASE } },
    );
    expect(r.code).toBe(0);
    expect(await checksums(pg.url('e2e_rt_jobs'))).toEqual(expected);
  });

  it('opens without dbcrate: gpg --decrypt | zstd -d | pg_restore', async () => {
    const gnupg = await mkdtemp(join(tmpdir(), 'dbcrate-e2e-gnupg-'));
    try {
      execFileSync(
        'gpg',
        [
          '--homedir',
          gnupg,
          '--batch',
          '--pinentry-mode',
          'loopback',
          '--passphrase',
          PASSPHRASE,
          '--import',
          keys.priv,
        ],
        { stdio: 'pipe' },
      );
      const dayDirs = await readdir(join(folder, 'shop', 'dumps'));
      const files = await readdir(join(folder, 'shop', 'dumps', dayDirs[0]));
      const data = files.find((f) => f.endsWith('.dump.zst.pgp'))!;
      const path = join(folder, 'shop', 'dumps', dayDirs[0], data);
      await pg.createDatabase('e2e_gpg');
      const { port } = pg;
      execFileSync(
        'bash',
        [
          '-o',
          'pipefail',
          '-c',
          `gpg --homedir "${gnupg}" --batch --quiet --pinentry-mode loopback --passphrase-fd 3 --decrypt "${path}" 3<<<"$PP" | zstd -d -c | pg_restore --exit-on-error -h 127.0.0.1 -p ${port} -U "$PGUSER" -d e2e_gpg`,
        ],
        {
          stdio: 'pipe',
          env: { ...process.env, PP: PASSPHRASE, PGUSER: pg.superuser, PGPASSWORD: pg.password },
        },
      );
      expect(await checksums(pg.url('e2e_gpg'))).toEqual(expected);
    } finally {
      await rm(gnupg, { recursive: true, force: true });
    }
  });

  it('never printed a secret', () => {
    const all = transcript.join('\n');
    expect(all.length).toBeGreaterThan(0);
    for (const secret of [pg.password, PASSPHRASE, s3.secretAccessKey]) expect(all).not.toContain(secret);
  });
});
