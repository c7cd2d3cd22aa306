import * as fs from 'node:fs';
import { join } from 'node:path';
import {
  pitrServerOf,
  sampleDatabase,
  waitArchived,
  type PgCluster,
  type PitrServer,
} from '@dbcrate/testing';
import { checksums } from './e2e.fixture';
import {
  cleanup,
  cli,
  explain,
  filesUnder,
  PASSPHRASE_ENV,
  preparePitr,
  recover,
  startArchivingCluster,
  walObjects,
  windowsDbs,
  WORKLOAD_SCHEMA,
  workloadStep,
  type PitrEnv,
} from './pitr.fixture';

const DB = 'pitr_branches';

/**
 * The acceptance case of issue 7: a test recovery of production, promoted with --archive
 * and written to, archives timeline 2 into production's archive; production goes on
 * writing timeline 1. `recover --latest` of production must not land on the copy's data:
 * it refuses naming both branches, and with --timeline 1 it lands on production's.
 */
describe('point-in-time recovery: a promoted copy archiving into production', () => {
  let env: PitrEnv;
  let pg: PgCluster;
  let srv: PitrServer;
  let systemId: string;
  let production: unknown[];

  beforeAll(async () => {
    env = await preparePitr('branches');
    pg = await startArchivingCluster(env);
    srv = pitrServerOf(pg);
    await pg.createDatabase(DB);
    await sampleDatabase(pg.url(DB), { rows: 300 });
    await pg.psql(WORKLOAD_SCHEMA, DB);
    systemId = await pg.psql('SELECT system_identifier FROM pg_control_system()');
    const b = await cli(['basebackup', '--db', pg.url(DB), '--to', env.dest, '--recipient', env.keys.pub]);
    if (b.code !== 0) throw new Error(`basebackup failed: ${explain(b, srv)}`);
    await workloadStep(pg, DB, 1);
    await waitArchived(srv);
  });

  afterAll(async () => {
    await cleanup(env);
    await pg?.stop();
  });

  it('a copy recovered with --archive, promoted and written to, archives timeline 2 here', async () => {
    const copy = await recover(env, pg, 'copy', ['--latest'], ['--archive']);
    expect({ code: copy.result.code, out: explain(copy.result, copy.server) }).toEqual(
      expect.objectContaining({ code: 0 }),
    );
    expect(copy.json?.timeline).toBe(2);
    await copy.server.query(`UPDATE accounts SET owner = 'the copy'`, DB);
    await waitArchived(copy.server);
    await copy.server.stop();
    const names = walObjects(env.destDir, systemId).map((o) => o.walName);
    expect(names).toContain('00000002.history');

    // production goes on writing (and archiving) timeline 1
    await workloadStep(pg, DB, 2);
    await workloadStep(pg, DB, 3);
    production = await checksums(pg.url(DB));
    await waitArchived(srv);
  });

  it('windows reports the two live branches (exit 7)', async () => {
    const w = await cli(['windows', '--from', env.dest, '--json']);
    expect({ code: w.code, out: explain(w) }).toEqual(expect.objectContaining({ code: 7 }));
    expect(w.stderr).toMatch(/two live branches: timeline 2 .* and timeline 1/);
    const [db] = windowsDbs(w.stdout) as Array<{ liveBranches?: Array<{ timeline: number; other: number }> }>;
    expect(db.liveBranches?.map((b) => [b.timeline, b.other])).toEqual([[2, 1]]);
  });

  it("production's recover --latest refuses, naming both branches, before downloading anything", async () => {
    const target = join(env.root, 'refused');
    const r = await cli([
      'recover',
      '--from',
      env.dest,
      '--key',
      env.keys.priv,
      '--passphrase-env',
      PASSPHRASE_ENV,
      '--target-dir',
      target,
      '--latest',
    ]);
    expect({ code: r.code, out: explain(r) }).toEqual(expect.objectContaining({ code: 7 }));
    expect(r.stderr).toMatch(/two live branches: timeline 2 .*timeline 1/);
    expect(r.stderr).toMatch(/--timeline 2 or --timeline 1/);
    expect(r.stderr).toContain('E_TIMELINE_BRANCHES');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(filesUnder(target)).toEqual([]);
  });

  it("with --timeline 1 it lands on production's data, none of the copy's", async () => {
    const rec = await recover(env, pg, 'production', ['--latest', '--timeline', '1']);
    expect({ code: rec.result.code, out: explain(rec.result, rec.server) }).toEqual(
      expect.objectContaining({ code: 0 }),
    );
    expect(await checksums(rec.server.url(DB))).toEqual(production);
    const [{ n }] = await rec.server.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM accounts WHERE owner = 'the copy'`,
      DB,
    );
    expect(n).toBe('0');
    // and it archived nothing (no --archive): the archive still has the same two branches
    expect(fs.existsSync(join(env.destDir, systemId, 'wal'))).toBe(true);
    expect(walObjects(env.destDir, systemId).map((o) => o.walName)).not.toContain('00000003.history');
    await rec.server.stop();
  });
});
