import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import {
  pitrServerOf,
  readyFiles,
  sampleDatabase,
  transcript,
  waitArchived,
  type CliProcess,
  type PgCluster,
  type PitrServer,
} from '@dbcrate/testing';
import { checksums } from './e2e.fixture';
import {
  allGaps,
  cleanup,
  cli,
  explain,
  gpgHome,
  lsnValue,
  mark,
  nextTimeline,
  openWithGpg,
  PASSPHRASE,
  preparePitr,
  recover,
  sha256,
  sleep,
  startAgent,
  startArchivingCluster,
  tableNames,
  WAL_SEGMENT_BYTES,
  walObjects,
  windowsDbs,
  WORKLOAD_SCHEMA,
  workloadStep,
  XLOG_PAGE_MAGIC_PG15,
  type Mark,
  type PitrEnv,
  type Recovered,
} from './pitr.fixture';

const DB = 'pitr_src';

/** What a recovered server must hold, and that it is a live, promoted server. */
async function expectRecovered(
  env: PitrEnv,
  systemId: string,
  rec: Recovered,
  expected: unknown[],
): Promise<void> {
  expect({ code: rec.result.code, out: explain(rec.result, rec.server) }).toEqual(
    expect.objectContaining({ code: 0 }),
  );
  expect(rec.json).toEqual(expect.objectContaining({ state: 'promoted', port: rec.port }));
  expect(rec.json!.walFilesRestored).toBeGreaterThan(0);
  expect(await checksums(rec.server.url(DB))).toEqual(expected);
  const [{ rec: inRecovery }] = await rec.server.query<{ rec: boolean }>('SELECT pg_is_in_recovery() AS rec');
  expect(inRecovery).toBe(false);
  // No secret in the configuration, and restore_command gone once promoted.
  const auto = fs.readFileSync(join(rec.targetDir, 'postgresql.auto.conf'), 'utf8');
  expect(auto).not.toContain(PASSPHRASE);
  expect(auto).not.toMatch(/^\s*restore_command/m);
  expect(auto).toMatch(/restore_command removed by dbcrate recover after promotion/);
  // The server logs in English whatever the source's locale (dbcrate follows its log lines).
  const [{ lc_messages }] = await rec.server.query<{ lc_messages: string }>('SHOW lc_messages');
  expect(lc_messages).toBe('C');
  // Replay progress: one definition (bytes of WAL replayed of the bytes needed), a total fixed
  // from the first line, bytes that never go down nor past it.
  const replay = rec.result.stderr
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes('"phase":"replay"'))
    .map((l) => JSON.parse(l) as { event: string; bytes: number; total?: number });
  expect(replay.length).toBeGreaterThan(0);
  expect(replay[replay.length - 1].event).toBe('done');
  const total = replay[0].total;
  expect(total).toBeGreaterThan(0);
  for (let i = 0; i < replay.length; i++) {
    expect(replay[i].total).toBe(total);
    expect(replay[i].bytes).toBeLessThanOrEqual(total!);
    if (i > 0) expect(replay[i].bytes).toBeGreaterThanOrEqual(replay[i - 1].bytes);
  }
  // A recovered copy archives nothing into the production archive (archive_mode=off unless
  // --archive), even once promoted and written to.
  expect(auto).toMatch(/^archive_mode = 'off'$/m);
  const [{ archive_mode }] = await rec.server.query<{ archive_mode: string }>('SHOW archive_mode');
  expect(archive_mode).toBe('off');
  const before = walObjects(env.destDir, systemId).map((o) => o.walName);
  await rec.server.query(
    `CREATE TABLE copy_writes AS SELECT i FROM generate_series(1, 20000) i; SELECT pg_switch_wal();
     INSERT INTO copy_writes VALUES (0); SELECT pg_switch_wal();`,
    DB,
  );
  await sleep(1500);
  expect(walObjects(env.destDir, systemId).map((o) => o.walName)).toEqual(before);
  expect(readyFiles(rec.targetDir)).toEqual([]);
  await rec.server.query('DROP TABLE copy_writes', DB);
}

/**
 * The user's PITR job through the CLI: a cluster archiving through `dbcrate wal-push` (with
 * the agent running), a base backup, a workload with a few marks, then recoveries to an
 * LSN, a time, a named restore point and the end, each compared table by table.
 */
describe('point-in-time recovery', () => {
  let env: PitrEnv;
  let pg: PgCluster;
  let srv: PitrServer;
  let agent: CliProcess;
  let systemId: string;
  let backup: {
    backupId: string;
    databaseId: string;
    startLsn: string;
    stopLsn: string;
    key: string;
    keys: string[];
  };
  let atMark: Mark;
  let atRestorePoint: unknown[];
  let atEnd: unknown[];
  let lastSegment: string;

  beforeAll(async () => {
    env = await preparePitr('main');
    // not C: the recovered server must still log in English (lc_messages=C on its command line)
    pg = await startArchivingCluster(env, { lc_messages: 'C.utf8' });
    srv = pitrServerOf(pg);
    agent = await startAgent(env, pg.dataDir);
    await pg.createDatabase(DB);
    await sampleDatabase(pg.url(DB), { rows: 2000 });
    await pg.psql(WORKLOAD_SCHEMA, DB);
    systemId = await pg.psql('SELECT system_identifier FROM pg_control_system()');
  });

  afterAll(async () => {
    await cleanup(env);
    await pg?.stop();
  });

  it('takes a base backup (pg_basebackup → zstd → OpenPGP)', async () => {
    const r = await cli([
      'basebackup',
      '--db',
      pg.url(DB),
      '--to',
      env.dest,
      '--recipient',
      env.keys.pub,
      '--json',
    ]);
    expect({ code: r.code, out: explain(r, srv) }).toEqual(expect.objectContaining({ code: 0 }));
    backup = JSON.parse(r.stdout);
    expect(backup.backupId).toMatch(/^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{8}$/);
    // default database id: the cluster's system identifier
    expect(backup.databaseId).toBe(systemId);
    const manifest = join(env.destDir, systemId, 'base', backup.backupId, 'backup.manifest.json');
    expect(JSON.parse(fs.readFileSync(manifest, 'utf8'))).toEqual(
      expect.objectContaining({ kind: 'physical', timeline: 1, startLsn: backup.startLsn }),
    );
    const identity = JSON.parse(fs.readFileSync(join(env.destDir, systemId, 'cluster.json'), 'utf8'));
    expect(identity.systemIdentifier).toBe(systemId);
  });

  it('archives a workload with marks: an LSN/time, a restore point, a DROP TABLE', async () => {
    await workloadStep(pg, DB, 1);
    await pg.psql('SELECT pg_switch_wal()');
    await workloadStep(pg, DB, 2);
    await pg.psql('SELECT pg_switch_wal()');
    await workloadStep(pg, DB, 3);
    atMark = await mark(srv, pg.url(DB));

    await workloadStep(pg, DB, 4);
    await pg.psql('SELECT pg_switch_wal()');
    await workloadStep(pg, DB, 5);
    atRestorePoint = await checksums(pg.url(DB));
    await pg.psql(`SELECT pg_create_restore_point('before_drop')`);

    await workloadStep(pg, DB, 6);
    await pg.psql('DROP TABLE doomed', DB);
    await workloadStep(pg, DB, 7, { doomed: false });
    atEnd = await checksums(pg.url(DB));
    lastSegment = await waitArchived(srv);

    // Three different states, so that a recovery to the wrong point cannot pass.
    expect(atMark.sums).not.toEqual(atRestorePoint);
    expect(atRestorePoint).not.toEqual(atEnd);
    expect(tableNames(atRestorePoint)).toContain('public.doomed');
    expect(tableNames(atEnd)).not.toContain('public.doomed');

    // Every segment from the backup's first to the last one is archived exactly once.
    const objects = walObjects(env.destDir, systemId);
    const segments = objects.filter((o) => /^[0-9A-F]{24}$/.test(o.walName)).map((o) => o.walName);
    expect(new Set(segments).size).toBe(segments.length);
    expect(segments).toContain(lastSegment);
    const first = parseInt(segments[0].slice(16), 16);
    const last = parseInt(lastSegment.slice(16), 16);
    const expected = Array.from(
      { length: last - first + 1 },
      (_, i) => `00000001${'0'.repeat(8)}${(first + i).toString(16).toUpperCase().padStart(8, '0')}`,
    );
    expect(segments.filter((s) => s <= lastSegment)).toEqual(expected);
    // the agent is still alive and did not complain
    expect(agent.child.exitCode).toBeNull();
  });

  it('windows --json shows one database with one continuous window, no gaps', async () => {
    const r = await cli(['windows', '--from', env.dest, '--json']);
    expect({ code: r.code, out: explain(r) }).toEqual(expect.objectContaining({ code: 0 }));
    const dbs = windowsDbs(r.stdout);
    expect(dbs.map((d) => d.databaseId)).toEqual([systemId]);
    const [db] = dbs;
    expect(allGaps(db)).toEqual([]);
    expect(db.conflicts ?? []).toEqual([]);
    expect(db.unreachable ?? []).toEqual([]);
    expect(db.timelines).toHaveLength(1);
    const [w] = db.timelines;
    expect(w.timeline).toBe(1);
    expect(w.from.backupId).toBe(backup.backupId);
    expect(w.from.lsn).toBe(backup.stopLsn);
    // the window reaches the last archived segment, past every mark
    expect(w.to.walFile).toBe(lastSegment);
    expect(lsnValue(w.to.lsn)).toBeGreaterThan(lsnValue(atMark.lsn));
  });

  it('opens an archived segment and the base backup with gpg and zstd, without dbcrate', async () => {
    const home = gpgHome(env);
    const [{ seg }] = await srv.query<{ seg: string }>(`SELECT pg_walfile_name('${atMark.lsn}') AS seg`);
    const obj = walObjects(env.destDir, systemId).find((o) => o.walName === seg);
    expect(obj).toBeDefined();
    const plain = openWithGpg(home, obj!.file);
    expect(plain.length).toBe(WAL_SEGMENT_BYTES);
    expect(plain.readUInt16LE(0)).toBe(XLOG_PAGE_MAGIC_PG15);
    expect(sha256(plain)).toBe(obj!.sha256);
    // byte for byte what PostgreSQL wrote (wal_keep_size keeps it in pg_wal)
    expect(plain.equals(fs.readFileSync(join(pg.dataDir, 'pg_wal', seg)))).toBe(true);

    // every part (one for pg_basebackup, --parallel for pgdata) opens with stock tools
    const listing: string[] = [];
    for (const key of backup.keys) {
      const tar = spawnSync(
        'bash',
        [
          '-o',
          'pipefail',
          '-c',
          `gpg --homedir "$GH" --batch --quiet --pinentry-mode loopback --passphrase-fd 3 --decrypt "$F" 3<<<"$PP" | zstd -d -q -c | tar -t`,
        ],
        {
          env: { ...process.env, GH: home, F: join(env.destDir, key), PP: PASSPHRASE },
          maxBuffer: 64 * 1024 * 1024,
        },
      );
      expect({ status: tar.status, stderr: tar.stderr.toString() }).toEqual({ status: 0, stderr: '' });
      listing.push(...tar.stdout.toString().split('\n'));
    }
    expect(listing).toContain('PG_VERSION');
    expect(listing).toContain('backup_label');
    expect(listing).toContain('global/pg_control');
  });

  // Each recovery is promoted but archives nothing (no --archive), so the archive keeps one
  // timeline and every recovery follows it.
  it('recover --latest replays everything, the DROP TABLE included (a server that would log in German)', async () => {
    // lc_messages 'C.utf8' (from the source) plus LANGUAGE=de: gettext translates the log, and
    // recover --start, which follows it, would wait for English lines until its deadline.
    const rec = await recover(env, pg, 'latest', ['--latest'], [], { env: { LANGUAGE: 'de' } });
    await expectRecovered(env, systemId, rec, atEnd);
    expect(rec.json!.timeline).toBe(2);
    await rec.server.stop();
  });

  it('recover --to-name before_drop stops at the restore point', async () => {
    const rec = await recover(env, pg, 'name', ['--to-name', 'before_drop']);
    await expectRecovered(env, systemId, rec, atRestorePoint);
    await rec.server.stop();
  });

  it('recover --to-time stops at the marked time (ISO 8601, numeric offset)', async () => {
    // 2026-11-25T14:03:12.250+00:00
    const rec = await recover(env, pg, 'time-offset', ['--to-time', atMark.time.replace(/Z$/, '+00:00')]);
    await expectRecovered(env, systemId, rec, atMark.sums);
    await rec.server.stop();
  });

  it('recover --to-time stops at the marked time (ISO 8601 with Z, as the help shows)', async () => {
    // 2026-11-25T14:03:12.250Z, on timeline 1 named explicitly (the only one: copies do not archive).
    const rec = await recover(env, pg, 'time-z', ['--to-time', atMark.time, '--timeline', '1'], [], {
      timeoutMs: 40_000,
    });
    await expectRecovered(env, systemId, rec, atMark.sums);
    await rec.server.stop();
  });

  it('recover --to-lsn stops at the marked LSN and reports where it stopped', async () => {
    const tli = nextTimeline(env, systemId);
    const rec = await recover(env, pg, 'lsn', ['--to-lsn', atMark.lsn]);
    expect(rec.json?.timeline).toBe(tli);
    await expectRecovered(env, systemId, rec, atMark.sums);
    // it reports where it stopped: at (or just past) the marked LSN
    expect(lsnValue(rec.json!.lsn!)).toBeGreaterThanOrEqual(lsnValue(atMark.lsn));

    await rec.server.query(`INSERT INTO accounts VALUES (999999, 'after recovery', 0)`, DB);
    expect(rec.result.pipesHeldOpen).toBe(false);
    await rec.server.stop();
  });

  it('never printed a secret', () => {
    const all = transcript.join('\n') + agent.output();
    expect(all.length).toBeGreaterThan(0);
    for (const secret of [PASSPHRASE, pg.password]) expect(all).not.toContain(secret);
    const logs = [fs.readFileSync(pg.logFile, 'utf8'), ...env.logs].join('\n');
    expect(env.logs.length).toBeGreaterThan(0);
    expect(logs).not.toContain(PASSPHRASE);
  });
});

/**
 * Timelines: a recovery promoted at a mid point with --archive becomes timeline 2 and keeps
 * archiving (archive_command came along in the restored configuration); recoveries then reach a
 * point on timeline 2 by default and a point on timeline 1 after the fork with --timeline 1.
 * No agent here: wal-push does the work itself.
 */
describe('point-in-time recovery across timelines', () => {
  let env: PitrEnv;
  let pg: PgCluster;
  let srv: PitrServer;
  let forkPoint: Mark;
  let afterForkOnTl1: Mark;
  let onTl2: Mark;
  let tl2: Recovered;
  let systemId: string;

  beforeAll(async () => {
    env = await preparePitr('tli');
    pg = await startArchivingCluster(env);
    srv = pitrServerOf(pg);
    await pg.createDatabase(DB);
    await sampleDatabase(pg.url(DB), { rows: 500 });
    await pg.psql(WORKLOAD_SCHEMA, DB);
    systemId = await pg.psql('SELECT system_identifier FROM pg_control_system()');
    const b = await cli(['basebackup', '--db', pg.url(DB), '--to', env.dest, '--recipient', env.keys.pub]);
    if (b.code !== 0) throw new Error(`basebackup failed: ${explain(b, srv)}`);
    await workloadStep(pg, DB, 1);
    await pg.psql('SELECT pg_switch_wal()');
    await workloadStep(pg, DB, 2);
    forkPoint = await mark(srv, pg.url(DB));
    await workloadStep(pg, DB, 3);
    await pg.psql('SELECT pg_switch_wal()');
    await workloadStep(pg, DB, 4);
    afterForkOnTl1 = await mark(srv, pg.url(DB));
    await waitArchived(srv);
    expect(afterForkOnTl1.sums).not.toEqual(forkPoint.sums);
  });

  afterAll(async () => {
    await cleanup(env);
    await pg?.stop();
  });

  it('a recovery to a mid point is promoted to timeline 2 and archives its own WAL', async () => {
    tl2 = await recover(env, pg, 'tl2', ['--to-lsn', forkPoint.lsn], ['--archive']);
    expect({ code: tl2.result.code, out: explain(tl2.result, tl2.server) }).toEqual(
      expect.objectContaining({ code: 0 }),
    );
    expect(await checksums(tl2.server.url(DB))).toEqual(forkPoint.sums);
    const [{ tli }] = await tl2.server.query<{ tli: string }>(
      `SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS tli`,
    );
    expect(tli).toBe('00000002');

    // writes on timeline 2, shipped by the inherited archive_command
    await tl2.server.query(
      `UPDATE accounts SET owner = 'timeline 2' WHERE id % 3 = 0;
       INSERT INTO events (kind, at_step, payload) SELECT 'tl2', 100, jsonb_build_object('i', i) FROM generate_series(1, 2000) i`,
      DB,
    );
    await tl2.server.query('SELECT pg_switch_wal()');
    await tl2.server.query(`INSERT INTO events (kind, at_step) VALUES ('tl2', 101)`, DB);
    onTl2 = await mark(tl2.server, tl2.server.url(DB));
    await waitArchived(tl2.server);
    expect(onTl2.sums).not.toEqual(afterForkOnTl1.sums);
    expect(onTl2.sums).not.toEqual(forkPoint.sums);
    // the history file and timeline-2 segments reached the destination
    const names = walObjects(env.destDir, systemId).map((o) => o.walName);
    expect(names).toContain('00000002.history');
    expect(names.some((n) => n.startsWith('00000002') && /^[0-9A-F]{24}$/.test(n))).toBe(true);
    expect(fs.existsSync(join(env.destDir, systemId, 'timelines', '00000002.json'))).toBe(true);
  });

  it('recover --to-lsn on timeline 2 (the latest) reaches the point on timeline 2', async () => {
    await tl2.server.stop();
    const tli = nextTimeline(env, systemId);
    expect(tli).toBe(3);
    const rec = await recover(env, pg, 'on-tl2', ['--to-lsn', onTl2.lsn], ['--archive']);
    expect({ code: rec.result.code, out: explain(rec.result, rec.server) }).toEqual(
      expect.objectContaining({ code: 0 }),
    );
    expect(await checksums(rec.server.url(DB))).toEqual(onTl2.sums);
    expect(rec.json?.timeline).toBe(tli);
    await waitArchived(rec.server); // its history file too, so the next recovery picks another timeline
    await rec.server.stop();
  });

  it('recover --timeline 1 reaches a point on timeline 1 after the fork', async () => {
    const tli = nextTimeline(env, systemId);
    const rec = await recover(
      env,
      pg,
      'on-tl1',
      ['--to-lsn', afterForkOnTl1.lsn, '--timeline', '1'],
      ['--archive'],
    );
    expect({ code: rec.result.code, out: explain(rec.result, rec.server) }).toEqual(
      expect.objectContaining({ code: 0 }),
    );
    expect(await checksums(rec.server.url(DB))).toEqual(afterForkOnTl1.sums);
    expect(rec.json?.timeline).toBe(tli);
    await waitArchived(rec.server);
    await rec.server.stop();
  });

  it('windows shows every timeline, each reachable and without gaps', async () => {
    const r = await cli(['windows', '--from', env.dest, '--json']);
    expect({ code: r.code, out: explain(r) }).toEqual(expect.objectContaining({ code: 0 }));
    const [db] = windowsDbs(r.stdout);
    expect(db.timelines.map((t) => t.timeline)).toEqual([1, 2, 3, 4]);
    expect(allGaps(db)).toEqual([]);
    expect(db.unreachable ?? []).toEqual([]);
    const at = (tli: number) => lsnValue(db.timelines.find((t) => t.timeline === tli)!.to.lsn);
    expect(at(1)).toBeGreaterThan(lsnValue(afterForkOnTl1.lsn));
    expect(at(2)).toBeGreaterThan(lsnValue(onTl2.lsn));
  });
});
