import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CLI_ENTRY,
  freePort,
  runCli,
  sampleDatabase,
  startPgCluster,
  startS3rver,
  transcript,
  type PgCluster,
  type S3rverHarness,
} from '@dbcrate/testing';
import { checksums, generateKeys, PASSPHRASE, type KeyPair } from './e2e.fixture';

/** Every bad input gets a clear error, the documented exit code, and no object that looks like a backup. */
describe('failures', () => {
  let pg: PgCluster;
  let s3: S3rverHarness;
  let keys: KeyPair;
  let other: KeyPair;
  let root: string;
  let source: string;
  const restoreEnv = { E2E_PASSPHRASE: PASSPHRASE };

  async function files(dir: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (d: string, rel: string) => {
      for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory()) await walk(join(d, e.name), `${rel}${e.name}/`);
        else out.push(`${rel}${e.name}`);
      }
    };
    await walk(dir, '');
    return out.sort();
  }

  async function freshBackup(dest: string): Promise<{ snapshotId: string; data: string; manifest: string }> {
    const b = await runCli([
      'backup',
      '--db',
      source,
      '--to',
      `file://${dest}`,
      '--recipient',
      keys.pub,
      '--database-id',
      'f',
    ]);
    expect(b.code).toBe(0);
    const snapshotId = b.stdout.trim();
    const all = await files(dest);
    return {
      snapshotId,
      data: join(
        dest,
        all.find((f) => f.includes(snapshotId) && f.endsWith('.pgp'))!,
      ),
      manifest: join(
        dest,
        all.find((f) => f.includes(snapshotId) && f.endsWith('.manifest.json'))!,
      ),
    };
  }

  const restore = (snap: string, dest: string, db: string, extra: string[] = [], key = keys.priv) =>
    runCli(
      [
        'restore',
        snap,
        '--from',
        `file://${dest}`,
        '--key',
        key,
        '--passphrase-env',
        'E2E_PASSPHRASE',
        '--to',
        pg.url(db),
        ...extra,
      ],
      {
        env: restoreEnv,
      },
    );

  beforeAll(async () => {
    pg = await startPgCluster();
    await pg.createDatabase('fail_source');
    source = pg.url('fail_source');
    await sampleDatabase(source, { rows: 3000 });
    keys = await generateKeys('fail-org');
    other = await generateKeys('other-org');
    root = await mkdtemp(join(tmpdir(), 'dbcrate-e2e-fail-'));
    s3 = await startS3rver({ buckets: ['e2e-failures'] });
  });

  afterAll(async () => {
    await Promise.allSettled([pg?.stop(), s3?.stop(), root && rm(root, { recursive: true, force: true })]);
  });

  it('a wrong key is refused, naming the fingerprints the backup was encrypted to', async () => {
    const dest = join(root, 'wrongkey');
    const { snapshotId } = await freshBackup(dest);
    await pg.createDatabase('fail_wrongkey');
    const r = await restore(snapshotId, dest, 'fail_wrongkey', [], other.priv);
    expect(r.code).toBe(5);
    expect(r.stderr).toContain(keys.fingerprint);
    expect(r.stderr).toContain('E_WRONG_KEY');
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('a truncated object is refused before anything is restored', async () => {
    const dest = join(root, 'truncated');
    const { snapshotId, data } = await freshBackup(dest);
    const size = (await readFile(data)).length;
    await truncate(data, Math.floor(size / 2));
    await pg.createDatabase('fail_truncated');
    const r = await restore(snapshotId, dest, 'fail_truncated');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/damaged|truncated|bytes/);
    expect(await checksums(pg.url('fail_truncated'))).toEqual([]);
  });

  it('a flipped byte is refused before anything is restored', async () => {
    const dest = join(root, 'flipped');
    const { snapshotId, data } = await freshBackup(dest);
    const buf = await readFile(data);
    buf[Math.floor(buf.length / 2)] ^= 0x01;
    await writeFile(data, buf);
    await pg.createDatabase('fail_flipped');
    const r = await restore(snapshotId, dest, 'fail_flipped');
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('E_INTEGRITY');
    expect(r.stderr).toContain('sha256');
    expect(await checksums(pg.url('fail_flipped'))).toEqual([]);
  });

  it('an object without manifest is listed as incomplete and never restored', async () => {
    const dest = join(root, 'nomanifest');
    const { snapshotId, manifest } = await freshBackup(dest);
    await unlink(manifest);
    const list = await runCli(['snapshots', '--from', `file://${dest}`, '--json']);
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ snapshotId, status: 'incomplete' })]);
    const human = await runCli(['snapshots', '--from', `file://${dest}`]);
    expect(human.stdout).toContain('incomplete');
    await pg.createDatabase('fail_nomanifest');
    const r = await restore(snapshotId, dest, 'fail_nomanifest');
    expect(r.code).toBe(7);
    expect(r.stderr).toContain('incomplete');
    const latest = await restore('latest', dest, 'fail_nomanifest');
    expect(latest.code).toBe(7);
  });

  it('an unreachable database fails clearly and leaves nothing in the destination', async () => {
    const dest = join(root, 'nodb');
    const port = await freePort();
    const r = await runCli([
      'backup',
      '--db',
      `postgres://u:TopSecretPw1@127.0.0.1:${port}/x`,
      '--to',
      `file://${dest}`,
      '--recipient',
      keys.pub,
    ]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('E_DB_UNREACHABLE');
    expect(r.stderr).not.toContain('TopSecretPw1');
    expect(await files(dest)).toEqual([]);
  });

  it('a failing pg_dump (no permission on a table) leaves no object', async () => {
    const dest = join(root, 'dumpfails');
    await pg.psql("CREATE ROLE limited LOGIN PASSWORD 'LimitedPw-31337'");
    await pg.psql('CREATE TABLE private_data AS SELECT 1 AS x', 'fail_source');
    const url = pg.url('fail_source').replace(/\/\/[^@]+@/, '//limited:LimitedPw-31337@');
    const r = await runCli(['backup', '--db', url, '--to', `file://${dest}`, '--recipient', keys.pub]);
    await pg.psql('DROP TABLE private_data', 'fail_source');
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('pg_dump exited with code 1');
    expect(r.stderr).toContain('permission denied');
    expect(r.stderr).not.toContain('LimitedPw-31337');
    expect(await files(dest)).toEqual([]);
  });

  it('an unreachable S3 endpoint fails clearly', async () => {
    const port = await freePort();
    const r = await runCli(
      [
        'backup',
        '--db',
        source,
        '--to',
        `s3://nobucket/x?endpoint=http://127.0.0.1:${port}&region=us-east-1&path_style=true`,
        '--recipient',
        keys.pub,
      ],
      { env: { AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE', AWS_SECRET_ACCESS_KEY: 'VerySecretKeyValue123' } },
    );
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('E_STORAGE_UNREACHABLE');
    expect(r.stderr).not.toContain('VerySecretKeyValue123');
  });

  it('an unwritable destination (unknown S3 credentials) fails clearly and leaves no object', async () => {
    const r = await runCli(
      ['backup', '--db', source, '--to', s3.url('denied', 'e2e-failures'), '--recipient', keys.pub],
      { env: { AWS_ACCESS_KEY_ID: 'AKIANOTKNOWNHERE', AWS_SECRET_ACCESS_KEY: 'WrongSecretValue987' } },
    );
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/E_STORAGE_DENIED/);
    expect(r.stderr).not.toContain('WrongSecretValue987');
    const list = await runCli(['snapshots', '--from', s3.url('denied', 'e2e-failures'), '--json'], {
      env: s3.env,
    });
    expect(JSON.parse(list.stdout)).toEqual([]);
  });

  it('an unwritable folder fails clearly', async () => {
    const blocker = join(root, 'a-file');
    await writeFile(blocker, 'x');
    const r = await runCli([
      'backup',
      '--db',
      source,
      '--to',
      `file://${blocker}/sub`,
      '--recipient',
      keys.pub,
    ]);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(/dbcrate: error: .*\[E_STORAGE_/);
  });

  it.each([
    ['ftp://host/x', 'E_BAD_URL'],
    ['file://relative/path', 'E_BAD_URL'],
    ['s3://AKIA:secret@bucket/x', 'E_BAD_URL'],
  ])('a bad destination URL %s is refused', async (url, code) => {
    const r = await runCli(['backup', '--db', source, '--to', url, '--recipient', keys.pub]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(code);
  });

  it('a missing option names the setting and where to give it', async () => {
    const r = await runCli(['backup', '--to', `file://${root}/x`, '--recipient', keys.pub]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('missing --db (the PostgreSQL URL to back up');
    expect(r.stderr).toContain('DBCRATE_DB');
  });

  it('settings come from a YAML config file and DBCRATE_* variables; flags win', async () => {
    const dest = join(root, 'config');
    const cfg = join(root, 'dbcrate.yaml');
    await writeFile(cfg, `db: ${source}\nrecipient: [${keys.pub}]\ndatabase-id: from-file\n`);
    const r = await runCli(['backup', '--config', cfg, '--database-id', 'from-flag'], {
      env: { DBCRATE_TO: `file://${dest}` },
    });
    expect(r.code).toBe(0);
    expect(await readdir(dest)).toEqual(['from-flag']);
  });

  it('refuses a non-empty target unless --clean, and a production target unless --i-know', async () => {
    const dest = join(root, 'guards');
    const { snapshotId } = await freshBackup(dest);
    await pg.createDatabase('fail_nonempty');
    await pg.psql('CREATE TABLE keep_me (id int)', 'fail_nonempty');
    const r1 = await restore(snapshotId, dest, 'fail_nonempty');
    expect(r1.code).toBe(8);
    expect(r1.stderr).toContain('not empty');
    expect(r1.stderr).toContain('--clean');

    await pg.createDatabase('fail_prod');
    await pg.psql("ALTER DATABASE fail_prod SET dbcrate.production = 'on'");
    const r2 = await restore(snapshotId, dest, 'fail_prod');
    expect(r2.code).toBe(8);
    expect(r2.stderr).toContain('production');
    expect(r2.stderr).toContain('--i-know');
    const r3 = await restore(snapshotId, dest, 'fail_prod', ['--i-know']);
    expect(r3.code).toBe(0);
    expect(await checksums(pg.url('fail_prod'))).toEqual(await checksums(source));

    const r4 = await restore(snapshotId, dest, 'fail_nonempty', ['--clean']);
    expect(r4.code).toBe(0);
  });

  it('a backup killed mid-upload leaves no multipart upload and no object', async () => {
    // A database large enough that the upload is still running when we interrupt it.
    await pg.createDatabase('fail_big');
    await pg.psql(
      'CREATE TABLE big AS SELECT g, md5(g::text) || md5((g*7)::text) AS t FROM generate_series(1, 1500000) g',
      'fail_big',
    );
    // small parts so that a multipart upload is surely in flight when we interrupt
    const url = `${s3.url('killed', 'e2e-failures')}&part_size=5MiB`;
    const child = spawn(
      process.execPath,
      [CLI_ENTRY, 'backup', '--db', pg.url('fail_big'), '--to', url, '--recipient', keys.pub],
      {
        env: { ...process.env, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    // wait until the multipart upload has begun (a part is in flight), then interrupt
    const started = () => s3.requests.some((r) => r.method === 'PUT' && r.querystring.includes('partNumber'));
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        if (started()) {
          clearInterval(t);
          resolve();
        } else if (child.exitCode !== null) {
          clearInterval(t);
          reject(new Error(`backup ended before the upload started: ${stderr}`));
        }
      }, 20);
    });
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    transcript.push(stderr);
    expect(code).toBe(130);
    // the upload had started and was aborted, not left open
    expect(await s3.openUploads('e2e-failures')).toEqual([]);
    const list = await runCli(['snapshots', '--from', url, '--json'], {
      env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey },
    });
    expect(JSON.parse(list.stdout)).toEqual([]);
  });

  it('never printed a secret', () => {
    const all = transcript.join('\n');
    for (const secret of [
      pg.password,
      PASSPHRASE,
      'TopSecretPw1',
      'VerySecretKeyValue123',
      'WrongSecretValue987',
    ]) {
      expect(all).not.toContain(secret);
    }
  });
});
