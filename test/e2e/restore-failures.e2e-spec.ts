import { chmodSync, existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findClientTools } from '@dbcrate/postgres';
import { runCli, startPgCluster, transcript, type PgCluster } from '@dbcrate/testing';
import { generateKeys, PASSPHRASE, type KeyPair } from './e2e.fixture';

/**
 * Restore through the CLI as a user runs it: a failing pg_restore is one clear line with
 * exit 3; "latest" never silently means an older snapshot; the decrypted spool of a
 * parallel restore is gone after SIGTERM, after a forced second signal, and after SIGKILL.
 */
describe('restore failures (CLI)', () => {
  let pg: PgCluster;
  let keys: KeyPair;
  let root: string;
  let dest: string;
  let hangingBin: string;
  let readyFile: string;
  let n = 0;
  const env = { E2E_PASSPHRASE: PASSPHRASE };

  const backup = async (db: string, id: string): Promise<string> => {
    const r = await runCli([
      'backup',
      '--db',
      pg.url(db),
      '--to',
      `file://${dest}`,
      '--recipient',
      keys.pub,
      '--database-id',
      id,
    ]);
    expect(r.code).toBe(0);
    return r.stdout.trim();
  };
  const restoreArgs = async (snap: string, extra: string[] = []) => [
    'restore',
    snap,
    '--from',
    `file://${dest}`,
    '--key',
    keys.priv,
    '--passphrase-env',
    'E2E_PASSPHRASE',
    '--to',
    await pg.createDatabase(`rf_target_${++n}`),
    ...extra,
  ];
  const spoolDir = () => {
    const d = join(root, `spool-${++n}`);
    mkdirSync(d);
    return d;
  };
  const noStack = (stderr: string) => {
    expect(stderr).not.toMatch(/Unhandled|\n\s+at .+:\d+:\d+/);
  };

  beforeAll(async () => {
    pg = await startPgCluster();
    keys = await generateKeys('restore-failures');
    root = await mkdtemp(join(tmpdir(), 'dbcrate-e2e-restore-failures-'));
    dest = join(root, 'dest');
    await pg.createDatabase('rf_src');
    await pg.psql('CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g', 'rf_src');
    await pg.createDatabase('rf_ghost');
    await pg.psql(
      'CREATE ROLE rf_ghost_owner; CREATE TABLE g (i int); ALTER TABLE g OWNER TO rf_ghost_owner;',
      'rf_ghost',
    );
    // A pg_restore that says where it is, then hangs until killed: signals land while the spool exists.
    const tools = await findClientTools(15);
    hangingBin = join(root, 'hanging-bin');
    mkdirSync(hangingBin);
    for (const t of ['pg_dump', 'psql', 'pg_basebackup'])
      symlinkSync(join(tools.binDir, t), join(hangingBin, t));
    readyFile = join(root, 'pg_restore.ready');
    writeFileSync(join(hangingBin, 'pg_restore'), `#!/bin/sh\necho $$ > '${readyFile}'\nexec sleep 60\n`);
    chmodSync(join(hangingBin, 'pg_restore'), 0o755);
  });

  afterAll(async () => {
    await Promise.allSettled([pg?.stop(), root && rm(root, { recursive: true, force: true })]);
  });

  it.each(['1', '3'])(
    'a pg_restore that fails (missing role, --jobs %s) exits 3 with one clear error',
    async (jobs) => {
      const id = await backup('rf_ghost', 'ghost');
      await pg.psql('DROP TABLE IF EXISTS g; DROP ROLE IF EXISTS rf_ghost_owner;', 'rf_ghost');
      const spool = spoolDir();
      const r = await runCli(await restoreArgs(`ghost/${id}`, ['--jobs', jobs, '--spool-dir', spool]), {
        env,
      });
      expect(r.code).toBe(3);
      expect(r.stderr).toContain('pg_restore exited with code 1');
      expect(r.stderr).toContain('role "rf_ghost_owner" does not exist');
      noStack(r.stderr);
      expect(await readdir(spool)).toEqual([]);
      await pg.psql(
        'CREATE ROLE rf_ghost_owner; CREATE TABLE g (i int); ALTER TABLE g OWNER TO rf_ghost_owner;',
        'rf_ghost',
      );
    },
  );

  it('"latest" with a damaged newest snapshot exits 6, naming it and the newest intact one', async () => {
    const older = await backup('rf_src', 'dmg');
    const newest = await backup('rf_src', 'dmg');
    const day = `${newest.slice(0, 4)}-${newest.slice(4, 6)}-${newest.slice(6, 8)}`;
    const file = join(
      dest,
      'dmg',
      'dumps',
      day,
      (await readdir(join(dest, 'dmg', 'dumps', day))).find(
        (f) => f.startsWith(newest) && f.endsWith('.pgp'),
      )!,
    );
    await truncate(file, 1000);
    const r = await runCli(await restoreArgs('latest', ['--database-id', 'dmg']), { env });
    expect(r.code).toBe(6);
    expect(r.stderr).toContain(`dmg/${newest}`);
    expect(r.stderr).toContain(`dmg/${older}`);
    noStack(r.stderr);
  });

  /** Start a parallel restore with the hanging pg_restore; resolves once it holds the spool. */
  async function parallelRestoreUntilReady(spool: string) {
    await rm(readyFile, { force: true });
    const id = await backup('rf_src', 'sig');
    let pid = 0;
    const done = runCli(
      await restoreArgs(`sig/${id}`, ['--jobs', '2', '--spool-dir', spool, '--pg-bin-dir', hangingBin]),
      {
        env,
        onSpawn: (p) => (pid = p),
        timeoutMs: 60_000,
      },
    );
    for (let i = 0; !existsSync(readyFile); i++) {
      if (i > 3000) throw new Error('pg_restore never started');
      await new Promise((r) => setTimeout(r, 20));
    }
    const [spooled] = await readdir(spool);
    expect((await readdir(join(spool, spooled))).some((f) => f.endsWith('.dump'))).toBe(true);
    return { pid, done };
  }

  it('SIGTERM during a parallel restore stops it (130) and removes the decrypted spool', async () => {
    const spool = spoolDir();
    const { pid, done } = await parallelRestoreUntilReady(spool);
    process.kill(pid, 'SIGTERM');
    const r = await done;
    expect(r.code).toBe(130);
    expect(r.stderr).toContain('interrupted');
    noStack(r.stderr);
    expect(await readdir(spool)).toEqual([]);
  });

  it('a second signal (forced exit) still removes the decrypted spool', async () => {
    const spool = spoolDir();
    const { pid, done } = await parallelRestoreUntilReady(spool);
    process.kill(pid, 'SIGTERM');
    process.kill(pid, 'SIGTERM');
    const r = await done;
    expect(r.code).toBe(130);
    expect(await readdir(spool)).toEqual([]);
  });

  it('a spool left by a SIGKILLed restore is swept by the next restore', async () => {
    const spool = spoolDir();
    const { pid, done } = await parallelRestoreUntilReady(spool);
    process.kill(pid, 'SIGKILL');
    await done;
    const hanging = Number((await import('node:fs')).readFileSync(readyFile, 'utf8').trim());
    try {
      process.kill(hanging, 'SIGKILL'); // the orphaned fake pg_restore
    } catch {
      // already gone
    }
    expect((await readdir(spool)).length).toBe(1); // what a kill leaves
    const id = await backup('rf_src', 'sweep');
    const r = await runCli(await restoreArgs(`sweep/${id}`, ['--jobs', '2', '--spool-dir', spool]), { env });
    expect(r.code).toBe(0);
    expect(await readdir(spool)).toEqual([]);
  });

  it('never printed a secret', () => {
    expect(transcript.join('\n')).not.toContain(PASSPHRASE);
  });
});
