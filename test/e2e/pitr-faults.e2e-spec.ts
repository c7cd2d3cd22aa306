import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import {
  archiverStats,
  giveToPostgres,
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
  filesUnder,
  gpgHome,
  lsnValue,
  openWithGpg,
  PASSPHRASE,
  PASSPHRASE_ENV,
  preparePitr,
  recover,
  sha256,
  sleep,
  startAgent,
  startArchivingCluster,
  walLeftovers,
  walObjects,
  windowsDbs,
  WORKLOAD_SCHEMA,
  workloadStep,
  type PitrEnv,
} from './pitr.fixture';

const DB = 'pitr_faults';
const SEGMENT = /^[0-9A-F]{24}$/;

async function until(
  what: string,
  cond: () => Promise<boolean> | boolean,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await sleep(100);
  }
}

/** Timeline-1 segments archived, and whether they are contiguous from the first one to `last`. */
function contiguousSegments(
  env: PitrEnv,
  systemId: string,
  last: string,
): { have: string[]; expected: string[] } {
  const have = walObjects(env.destDir, systemId)
    .map((o) => o.walName)
    .filter((n) => SEGMENT.test(n) && n.startsWith('00000001') && n <= last);
  const first = parseInt(have[0].slice(16), 16);
  const end = parseInt(last.slice(16), 16);
  const expected = Array.from(
    { length: end - first + 1 },
    (_, i) => `00000001${last.slice(8, 16)}${(first + i).toString(16).toUpperCase().padStart(8, '0')}`,
  );
  return { have, expected };
}

/**
 * What goes wrong in real life: the destination goes away, the agent dies mid-push,
 * someone pushes a different file under an archived name, a WAL object disappears.
 * Archiving must never lose or corrupt a segment, and recover must refuse what it cannot do.
 */
describe('point-in-time recovery: faults', () => {
  let env: PitrEnv;
  let pg: PgCluster;
  let srv: PitrServer;
  let agent: CliProcess;
  let systemId: string;
  let lsnAfterBackup: string;
  const outageSegments: string[] = [];

  beforeAll(async () => {
    env = await preparePitr('faults');
    pg = await startArchivingCluster(env);
    srv = pitrServerOf(pg);
    agent = await startAgent(env, pg.dataDir);
    await pg.createDatabase(DB);
    await sampleDatabase(pg.url(DB), { rows: 300 });
    await pg.psql(WORKLOAD_SCHEMA, DB);
    systemId = await pg.psql('SELECT system_identifier FROM pg_control_system()');
  });

  afterAll(async () => {
    try {
      fs.chmodSync(env.destDir, 0o700);
    } catch {
      // already gone
    }
    await cleanup(env);
    await pg?.stop();
  });

  it('takes a base backup while the agent archives', async () => {
    const b = await cli(['basebackup', '--db', pg.url(DB), '--to', env.dest, '--recipient', env.keys.pub]);
    expect({ code: b.code, out: explain(b, srv) }).toEqual(expect.objectContaining({ code: 0 }));
    await workloadStep(pg, DB, 1);
    lsnAfterBackup = await pg.psql('SELECT pg_current_wal_lsn()');
    await waitArchived(srv);
  });

  it('destination down: archive_command fails, PostgreSQL keeps the segments, all arrive once it is back', async () => {
    const before = await archiverStats(srv);
    fs.chmodSync(env.destDir, 0o000); // postgres (archive_command, agent) can no longer get in
    try {
      await workloadStep(pg, DB, 2);
      outageSegments.push(await pg.psql('SELECT pg_walfile_name(pg_switch_wal())'));
      await workloadStep(pg, DB, 3);
      outageSegments.push(await pg.psql('SELECT pg_walfile_name(pg_switch_wal())'));
      await until('pg_stat_archiver.failed_count to grow', async () => {
        const s = await archiverStats(srv);
        return s.failed_count > before.failed_count;
      });
      const during = await archiverStats(srv);
      expect(during.last_failed_wal).toBe(outageSegments[0]);
      expect(during.last_archived_wal).toBe(before.last_archived_wal);
      expect(readyFiles(pg.dataDir)).toEqual(expect.arrayContaining(outageSegments));
      const archived = walObjects(env.destDir, systemId).map((o) => o.walName);
      for (const s of outageSegments) expect(archived).not.toContain(s);
      // the server log says why
      expect(fs.readFileSync(pg.logFile, 'utf8')).toMatch(/archive command failed/);
    } finally {
      fs.chmodSync(env.destDir, 0o700);
    }

    await workloadStep(pg, DB, 4);
    const last = await waitArchived(srv, { timeoutMs: 90_000 });
    expect(readyFiles(pg.dataDir)).toEqual([]);
    const { have, expected } = contiguousSegments(env, systemId, last);
    expect(have).toEqual(expected);
    for (const s of outageSegments) expect(have).toContain(s);
  });

  it('agent killed (SIGKILL) inside a put: nothing acknowledged, no partial object visible, a retry archives it', async () => {
    expect(agent.child.exitCode).toBeNull();
    // An agent whose first upload stops inside the put, its bytes sent, before the commit
    // step: the kill below lands there every time, not between two puts.
    await agent.stop('SIGTERM');
    const marker = join(env.root, 'hung-in-put');
    agent = await startAgent(env, pg.dataDir, { env: { DBCRATE_TEST_HANG_IN_PUT: marker } });
    const objectsBefore = walObjects(env.destDir, systemId).length;
    // ~30 MB of WAL in one go: several segments become ready while the agent pushes ahead.
    const load = pg.psql(
      `INSERT INTO events (kind, at_step, payload)
         SELECT 'bulk', 50, jsonb_build_object('i', i, 'a', md5(i::text), 'b', md5((i * 7)::text), 'c', md5((i * 13)::text))
           FROM generate_series(1, 150000) i;
       SELECT pg_switch_wal();`,
      DB,
    );
    await until('the agent to stop inside a put', () => fs.existsSync(marker), 90_000);
    const hung = fs.readFileSync(marker, 'utf8').trim();
    expect(hung).toMatch(SEGMENT);
    // the bytes are in the put's hidden temp file; nothing is visible under the WAL name …
    expect(walLeftovers(env.destDir, systemId).filter((n) => n.startsWith(`.${hung}-`))).toHaveLength(1);
    expect(walObjects(env.destDir, systemId).map((o) => o.walName)).not.toContain(hung);
    // … and PostgreSQL was not told it is archived
    const done = join(pg.dataDir, 'pg_wal', 'archive_status', `${hung}.done`);
    expect(fs.existsSync(done)).toBe(false);
    process.kill(agent.pid, 'SIGKILL');
    const { signal } = await agent.exited;
    expect(signal).toBe('SIGKILL');
    await load;
    expect(walObjects(env.destDir, systemId).map((o) => o.walName)).not.toContain(hung);

    // archive_command goes on alone (a stale agent socket must not block it)
    await workloadStep(pg, DB, 5);
    const last = await waitArchived(srv, { timeoutMs: 90_000 });
    const { have, expected } = contiguousSegments(env, systemId, last);
    expect(have).toEqual(expected);

    // Every listed object opens and is exactly what its name says.
    const home = gpgHome(env);
    const objects = walObjects(env.destDir, systemId);
    expect(objects.length).toBeGreaterThan(objectsBefore);
    // the retry (archive_command alone) archived the segment the kill interrupted, once,
    // and removed the claim the killed push had left
    expect(objects.filter((o) => o.walName === hung)).toHaveLength(1);
    // (hidden temp files of puts the kill interrupted are no claims: lists never show them)
    const claims = walLeftovers(env.destDir, systemId).filter(
      (n) => n.includes('.claim-') && !n.startsWith('.'),
    );
    expect(claims).toEqual([]);
    for (const o of objects) {
      const plain = openWithGpg(home, o.file);
      expect({ object: o.walName, sha256: sha256(plain) }).toEqual({ object: o.walName, sha256: o.sha256 });
      const local = join(pg.dataDir, 'pg_wal', o.walName);
      if (SEGMENT.test(o.walName) && fs.existsSync(local)) {
        expect({ object: o.walName, same: plain.equals(fs.readFileSync(local)) }).toEqual({
          object: o.walName,
          same: true,
        });
      }
    }

    // and wal-fetch hands the last one back as PostgreSQL wrote it
    const out = join(env.root, 'fetched', last);
    fs.mkdirSync(join(env.root, 'fetched'));
    giveToPostgres(join(env.root, 'fetched'), 0o700);
    const f = await cli([
      'wal-fetch',
      last,
      out,
      '--from',
      env.dest,
      '--key',
      env.keys.priv,
      '--passphrase-env',
      PASSPHRASE_ENV,
      '--database-id',
      systemId,
    ]);
    expect({ code: f.code, out: explain(f) }).toEqual(expect.objectContaining({ code: 0 }));
    expect(fs.readFileSync(out).equals(fs.readFileSync(join(pg.dataDir, 'pg_wal', last)))).toBe(true);
    // not in the archive: exit 1, as restore_command must
    const missing = await cli([
      'wal-fetch',
      '0000000100000000000000FE',
      join(env.root, 'fetched', 'missing'),
      '--from',
      env.dest,
      '--key',
      env.keys.priv,
      '--passphrase-env',
      PASSPHRASE_ENV,
      '--database-id',
      systemId,
    ]);
    expect(missing.code).toBe(1);
    expect(fs.existsSync(join(env.root, 'fetched', 'missing'))).toBe(false);

    // windows lists no temp file of the interrupted put and sees no gap
    const w = await cli(['windows', '--from', env.dest, '--json']);
    expect({ code: w.code, out: explain(w) }).toEqual(expect.objectContaining({ code: 0 }));
    for (const leftover of walLeftovers(env.destDir, systemId)) expect(w.stdout).not.toContain(leftover);

    // a new agent takes over the socket the killed one left behind, and serves archive_command
    agent = await startAgent(env, pg.dataDir);
    await workloadStep(pg, DB, 6);
    await waitArchived(srv);
    expect(agent.child.exitCode).toBeNull();
  });

  it('a different file under an archived name is refused and the archived object stays as it was', async () => {
    const target = outageSegments[1];
    const [obj] = walObjects(env.destDir, systemId).filter((o) => o.walName === target);
    expect(obj).toBeDefined();
    const stored = fs.readFileSync(obj.file);
    const fake = join(env.root, 'fake', 'pg_wal');
    fs.mkdirSync(fake, { recursive: true });
    giveToPostgres(join(env.root, 'fake'), 0o700);
    giveToPostgres(fake, 0o700);
    const copy = join(fake, target);
    const buf = fs.readFileSync(join(pg.dataDir, 'pg_wal', target));
    expect(sha256(buf)).toBe(obj.sha256);

    // the same content again: success, nothing new
    fs.writeFileSync(copy, buf);
    giveToPostgres(copy, 0o600);
    const same = await cli([
      'wal-push',
      copy,
      '--config',
      env.configFile,
      '--pgdata',
      pg.dataDir,
      '--no-agent',
    ]);
    expect({ code: same.code, out: explain(same) }).toEqual(expect.objectContaining({ code: 0 }));

    buf[3 * 8192 + 100] ^= 0x40;
    fs.writeFileSync(copy, buf);
    // pushed by wal-push itself, and handed to the running agent (which archives only
    // files of its own pg_wal: this one is refused before its content is even looked at)
    for (const how of [['--no-agent'], []]) {
      const r = await cli(['wal-push', copy, '--config', env.configFile, '--pgdata', pg.dataDir, ...how]);
      expect({ how, code: r.code }).toEqual({ how, code: expect.any(Number) });
      expect({ how, code: r.code }).not.toEqual({ how, code: 0 });
      expect(r.stderr).toContain(target);
      expect(r.stderr).toMatch(how.length ? /different content/ : /only the WAL of its own data directory/);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    }

    const after = walObjects(env.destDir, systemId).filter((o) => o.walName === target);
    expect(after.map((o) => o.file)).toEqual([obj.file]);
    expect(fs.readFileSync(obj.file).equals(stored)).toBe(true);
  });

  it('a WAL gap: windows reports it; recover past it is refused before anything is downloaded', async () => {
    const gapDir = join(env.root, 'gap-dest');
    execFileSync('cp', ['-a', env.destDir, gapDir]);
    const gapDest = `file://${gapDir}`;
    const gap = outageSegments[0];
    const [obj] = walObjects(gapDir, systemId).filter((o) => o.walName === gap);
    fs.rmSync(obj.file);
    const endLsn = await pg.psql('SELECT pg_current_wal_lsn()');

    // an error (exit status and message), and the gap in the JSON
    const w = await cli(['windows', '--from', gapDest, '--json']);
    expect(w.code).not.toBe(0);
    expect(w.stderr).toContain(gap);
    const [db] = windowsDbs(w.stdout);
    expect((allGaps(db) as Array<{ firstMissing: string }>).map((g) => g.firstMissing)).toContain(gap);
    // the window of timeline 1 ends where the gap begins
    const tl1 = db.timelines.find((t) => t.timeline === 1);
    expect(tl1?.to.walFile).toBe(
      `${gap.slice(0, 16)}${(parseInt(gap.slice(16), 16) - 1).toString(16).toUpperCase().padStart(8, '0')}`,
    );

    const target = join(env.root, 'gap-target');
    const r = await cli([
      'recover',
      '--from',
      gapDest,
      '--key',
      env.keys.priv,
      '--passphrase-env',
      PASSPHRASE_ENV,
      '--target-dir',
      target,
      '--to-lsn',
      endLsn,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/recoverable from .+ to .+/);
    expect(r.stderr).toContain(gap);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(filesUnder(target)).toEqual([]);

    // --latest across the gap: exit 7 naming the gap and the reachable end, nothing downloaded
    const latest = await cli([
      'recover',
      '--from',
      gapDest,
      '--key',
      env.keys.priv,
      '--passphrase-env',
      PASSPHRASE_ENV,
      '--target-dir',
      join(env.root, 'gap-latest'),
      '--latest',
    ]);
    expect({ code: latest.code, out: explain(latest) }).toEqual(expect.objectContaining({ code: 7 }));
    expect(latest.stderr).toContain(gap);
    expect(latest.stderr).toContain(tl1!.to.lsn);
    expect(latest.stderr).toContain('--accept-gap');
    expect(latest.stderr).not.toMatch(/\n\s+at /);
    expect(filesUnder(join(env.root, 'gap-latest'))).toEqual([]);

    // a target LSN equal to the end of contiguous WAL: refused before anything is downloaded
    const atEnd = await cli([
      'recover',
      '--from',
      gapDest,
      '--key',
      env.keys.priv,
      '--passphrase-env',
      PASSPHRASE_ENV,
      '--target-dir',
      join(env.root, 'gap-at-end'),
      '--to-lsn',
      tl1!.to.lsn,
    ]);
    expect({ code: atEnd.code, out: explain(atEnd) }).toEqual(expect.objectContaining({ code: 7 }));
    expect(atEnd.stderr).toMatch(/at the end of the contiguous archived WAL/);
    expect(atEnd.stderr).toMatch(/recoverable from .+ to .+/);
    expect(filesUnder(join(env.root, 'gap-at-end'))).toEqual([]);

    // a zone-less --to-time: a usage error, nothing downloaded
    const zoneless = await cli([
      'recover',
      '--from',
      gapDest,
      '--key',
      env.keys.priv,
      '--passphrase-env',
      PASSPHRASE_ENV,
      '--target-dir',
      join(env.root, 'gap-zoneless'),
      '--to-time',
      '2026-11-25 14:03:12',
    ]);
    expect({ code: zoneless.code, out: explain(zoneless) }).toEqual(expect.objectContaining({ code: 2 }));
    expect(zoneless.stderr).toMatch(/no time zone/);
    expect(filesUnder(join(env.root, 'gap-zoneless'))).toEqual([]);

    // --accept-gap: recovers to the end of contiguous WAL, and says so
    const accepted = await recover({ ...env, dest: gapDest }, pg, 'accept-gap', ['--latest', '--accept-gap']);
    expect({ code: accepted.result.code, out: explain(accepted.result, accepted.server) }).toEqual(
      expect.objectContaining({ code: 0 }),
    );
    expect(accepted.result.stderr).toMatch(/--accept-gap: recovering to the end of contiguous WAL/);
    expect(accepted.result.stderr).toContain(gap);
    expect(accepted.json).toEqual(
      expect.objectContaining({
        state: 'promoted',
        endLsn: tl1!.to.lsn,
        acceptedGap: expect.objectContaining({ firstMissing: gap }),
      }),
    );
    expect(lsnValue(accepted.json!.lsn!)).toBeLessThan(lsnValue(tl1!.to.lsn));
    await accepted.server.stop();

    // without --start, --passphrase-env is refused: the server would have to hold the passphrase
    const noStart = await cli([
      'recover',
      '--from',
      gapDest,
      '--key',
      env.keys.priv,
      '--passphrase-env',
      PASSPHRASE_ENV,
      '--target-dir',
      join(env.root, 'no-start'),
      '--to-lsn',
      lsnAfterBackup,
    ]);
    expect({ code: noStart.code, out: explain(noStart) }).toEqual(expect.objectContaining({ code: 2 }));
    expect(noStart.stderr).toMatch(/--passphrase-env needs --start/);
    expect(filesUnder(join(env.root, 'no-start'))).toEqual([]);

    // a target before the gap is still fine
    const ok = await recover({ ...env, dest: gapDest }, pg, 'before-gap', ['--to-lsn', lsnAfterBackup]);
    expect({ code: ok.result.code, out: explain(ok.result, ok.server) }).toEqual(
      expect.objectContaining({ code: 0 }),
    );
    expect(ok.json?.state).toBe('promoted');
    await ok.server.stop();
  });

  it("recover --start onto a port in use fails with the server's reason, promptly", async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const t0 = Date.now();
      const rec = await recover(env, pg, 'port-in-use', ['--latest'], [], { port, timeoutMs: 60_000 });
      expect(rec.result.code).not.toBe(0);
      expect(rec.result.code).not.toBeNull();
      expect(rec.result.stderr).toMatch(/could not create any TCP\/IP sockets|Address already in use/);
      expect(rec.result.stderr).not.toMatch(/\n\s+at /);
      expect(Date.now() - t0).toBeLessThan(30_000);
      await rec.server.stop();
    } finally {
      blocker.close();
    }
  });

  it('after the outage and the agent kill, recover --latest loses nothing', async () => {
    await workloadStep(pg, DB, 7);
    await waitArchived(srv);
    const expected = await checksums(pg.url(DB));
    const rec = await recover(env, pg, 'latest', ['--latest']);
    expect({ code: rec.result.code, out: explain(rec.result, rec.server) }).toEqual(
      expect.objectContaining({ code: 0 }),
    );
    expect(await checksums(rec.server.url(DB))).toEqual(expected);
    await rec.server.stop();
  });

  it('never printed a secret', () => {
    const all = [
      transcript.join('\n'),
      agent.output(),
      fs.readFileSync(pg.logFile, 'utf8'),
      ...env.logs,
    ].join('\n');
    expect(all.length).toBeGreaterThan(0);
    for (const secret of [PASSPHRASE, pg.password]) expect(all).not.toContain(secret);
  });
});
