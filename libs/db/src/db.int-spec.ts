import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { Agent } from './agent.entity';
import { Database, Destination } from './database.entity';
import { createDataSource, openMetadataDatabase } from './db.datasource';
import { Snapshot } from './job.entity';
import { Organisation } from './organisation.entity';

// A throwaway database on the machine's PostgreSQL for this file.
const ADMIN = process.env.DBCRATE_TEST_PG ?? 'postgres://postgres@127.0.0.1/postgres';
const NAME = `dbcrate_db_${randomBytes(4).toString('hex')}`;
const url = (() => {
  const u = new URL(ADMIN);
  u.pathname = `/${NAME}`;
  return u.toString();
})();

describe('libs/db on PostgreSQL: schema from migrations only', () => {
  const admin = new Client({ connectionString: ADMIN });
  beforeAll(async () => {
    await admin.connect();
    await admin.query(`CREATE DATABASE ${NAME}`);
  });
  afterAll(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${NAME} WITH (FORCE)`);
    await admin.end();
  });

  it('migrates a new database, from two replicas at once, to exactly what the entities say', async () => {
    const [a, b] = await Promise.all([openMetadataDatabase(url), openMetadataDatabase(url)]);
    try {
      // No statement left between the migrations and the entities: the migrations are current.
      const pending = await a.driver.createSchemaBuilder().log();
      expect(pending.upQueries.map((q) => q.query)).toEqual([]);
      const applied = await a.query('SELECT name FROM dbcrate_migrations');
      expect(applied).toHaveLength(1);
    } finally {
      await Promise.all([a.destroy(), b.destroy()]);
    }
  });

  it('records one snapshot per job and keeps sealed credentials out of ordinary reads', async () => {
    const ds = await openMetadataDatabase(url);
    try {
      const org = await ds.getRepository(Organisation).save({ name: 'org-a' });
      const agent = await ds.getRepository(Agent).save({
        orgId: org.id,
        name: 'host-1',
        host: 'host-1',
        identityFingerprint: randomBytes(32).toString('hex'),
      });
      const dest = await ds.getRepository(Destination).save({
        orgId: org.id,
        name: 'bucket',
        type: 's3',
        url: 's3://bucket/prefix',
        sealedCredentials: Buffer.from([1, 2, 3]),
      });
      const db = await ds.getRepository(Database).save({
        orgId: org.id,
        agentId: agent.id,
        destinationId: dest.id,
        name: 'orders',
        databaseKey: 'orders',
        kind: 'dump',
        conninfo: 'host=db dbname=orders',
      });
      const snap = {
        orgId: org.id,
        databaseId: db.id,
        jobId: 'job-1',
        kind: 'dump' as const,
        snapshotId: '20261208T000000.000Z-aaaa',
        manifestKey: 'orders/dumps/x.manifest.json',
        storedBytes: '10',
        sha256: 'ab'.repeat(32),
        signer: 'F'.repeat(40),
        startedAt: new Date(),
        finishedAt: new Date(),
      };
      await ds.getRepository(Snapshot).insert(snap);
      // The same job's result delivered again cannot record a second snapshot.
      await expect(
        ds.getRepository(Snapshot).insert({ ...snap, snapshotId: '20261208T000001.000Z-bbbb' }),
      ).rejects.toThrow(/duplicate key value violates unique constraint/);
      const read = await ds.getRepository(Destination).findOneByOrFail({ id: dest.id });
      expect(read.sealedCredentials).toBeUndefined();
      expect(JSON.stringify(read)).not.toContain('sealed');
      // A database cannot point at another organisation's agent by accident of a missing row.
      await expect(
        ds
          .getRepository(Database)
          .insert({ ...db, id: undefined, name: 'x', agentId: '00000000-0000-4000-8000-000000000000' }),
      ).rejects.toThrow(/foreign key/);
    } finally {
      await ds.destroy();
    }
  });

  it('reverts every migration (down) and applies them again', async () => {
    const ds = createDataSource({ url });
    await ds.initialize();
    try {
      await ds.query('TRUNCATE organisations CASCADE');
      while ((await ds.query('SELECT count(*)::int AS n FROM dbcrate_migrations'))[0].n > 0)
        await ds.undoLastMigration();
      expect(await ds.query("SELECT to_regclass('public.jobs') AS t")).toEqual([{ t: null }]);
      await ds.runMigrations();
      expect((await ds.driver.createSchemaBuilder().log()).upQueries).toEqual([]);
    } finally {
      await ds.destroy();
    }
  });
});
