import { startPgCluster, type PgCluster } from '@dbcrate/testing';
import { cleanup, cli, preparePitr, startArchivingCluster, type PitrEnv } from './pitr.fixture';

/**
 * `dbcrate check` proves archiving works (a forced WAL switch arrives in the archive) and
 * fails with why when it does not; `dbcrate info` lists dumps and base backups with their
 * size, duration, LSN range, signer and status, the archived WAL and the restore window.
 */
describe('check and info', () => {
  let env: PitrEnv;
  let pg: PgCluster;
  let off: PgCluster;
  let systemId: string;

  beforeAll(async () => {
    env = await preparePitr('info');
    pg = await startArchivingCluster(env);
    off = await startPgCluster();
    systemId = await pg.psql('SELECT system_identifier FROM pg_control_system()');
  }, 120_000);
  afterAll(async () => {
    await cleanup(env);
    await pg?.stop();
    await off?.stop();
  });

  it('check: the switched segment arrives in the archive (exit 0)', async () => {
    const r = await cli(['check', '--db', pg.url('postgres'), '--from', env.dest, '--json']);
    expect({ code: r.code, err: r.stderr }).toEqual(expect.objectContaining({ code: 0 }));
    const out = JSON.parse(r.stdout);
    expect(out.databaseId).toBe(systemId);
    expect(out.walFile).toMatch(/^[0-9A-F]{24}$/);
    expect(out.storedBytes).toBeGreaterThan(0);
  });

  it('check: archiving off, or WAL going elsewhere, fails with exit 11 and why', async () => {
    const r = await cli(['check', '--db', off.url('postgres'), '--from', env.dest]);
    expect(r.code).toBe(11);
    expect(r.stderr).toContain('archiving is off');
    const elsewhere = await cli([
      'check',
      '--db',
      pg.url('postgres'),
      '--from',
      env.dest,
      '--database-id',
      'not-this-one',
      '--timeout',
      '3',
    ]);
    expect(elsewhere.code).toBe(11);
    expect(elsewhere.stderr).toMatch(/did not arrive in .* within 3 s/);
  });

  it('info: base backups and dumps with size, duration, LSNs, signer and status; WAL and window', async () => {
    const base = await cli([
      'basebackup',
      '--db',
      pg.url('postgres'),
      '--to',
      env.dest,
      '--recipient',
      env.keys.pub,
      '--json',
    ]);
    expect({ code: base.code, err: base.stderr }).toEqual(expect.objectContaining({ code: 0 }));
    await pg.psql('CREATE TABLE t AS SELECT 1 AS x; SELECT pg_switch_wal();');
    const dump = await cli([
      'backup',
      '--db',
      pg.url('postgres'),
      '--to',
      env.dest,
      '--recipient',
      env.keys.pub,
    ]);
    expect(dump.code).toBe(0);
    // wait for the switched segment (check does exactly that)
    expect((await cli(['check', '--db', pg.url('postgres'), '--from', env.dest])).code).toBe(0);

    const r = await cli(['info', '--from', env.dest, '--json']);
    expect({ code: r.code, err: r.stderr }).toEqual(expect.objectContaining({ code: 0 }));
    const info = JSON.parse(r.stdout);
    const db = info.databases.find((d: { databaseId: string }) => d.databaseId === systemId);
    const physical = db.backups.find((b: { kind: string }) => b.kind === 'physical');
    expect(physical).toEqual(
      expect.objectContaining({
        status: 'complete',
        timeline: 1,
        startLsn: expect.any(String),
        stopLsn: expect.any(String),
      }),
    );
    expect(physical.storedBytes).toBeGreaterThan(0);
    expect(physical.durationSeconds).toBeGreaterThanOrEqual(0);
    expect(physical.signer).toMatch(/^[0-9A-F]{40,64}$/);
    expect(db.wal[0]).toEqual(expect.objectContaining({ timeline: 1, files: expect.any(Number) }));
    expect(db.windows[0]).toMatch(/^recoverable from .* on timeline 1$/);
    const logical = info.databases
      .flatMap((d: { backups: { kind: string }[] }) => d.backups)
      .find((b: { kind: string }) => b.kind === 'logical');
    expect(logical).toEqual(expect.objectContaining({ status: 'complete', signer: physical.signer }));

    const text = await cli(['info', '--from', env.dest]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`database ${systemId}`);
    expect(text.stdout).toMatch(/physical\s+\S+\s+complete/);
    expect(text.stdout).toMatch(/WAL timeline 1: [0-9A-F]{24} – [0-9A-F]{24}/);
  });
});
