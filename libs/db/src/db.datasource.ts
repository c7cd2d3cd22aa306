import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { Agent, EnrollmentToken } from './agent.entity';
import { Database, Destination, Schedule } from './database.entity';
import { Job, Snapshot } from './job.entity';
import { ApiToken, Membership, Organisation, OrgKey, User } from './organisation.entity';
import { MIGRATIONS } from './migrations';

export const ENTITIES = [
  Organisation,
  User,
  Membership,
  ApiToken,
  OrgKey,
  Agent,
  EnrollmentToken,
  Destination,
  Database,
  Schedule,
  Job,
  Snapshot,
];

/**
 * The control plane's metadata database. The schema comes from migrations only (never
 * `synchronize`).
 */
export function createDataSource(o: { url: string; logging?: boolean }): DataSource {
  return new DataSource({
    type: 'postgres',
    url: o.url,
    entities: ENTITIES,
    migrations: MIGRATIONS,
    migrationsTableName: 'dbcrate_migrations',
    synchronize: false,
    // gen_random_uuid() is built into PostgreSQL 13+: no extension, no superuser needed.
    uuidExtension: 'pgcrypto',
    installExtensions: false,
    logging: o.logging ?? false,
  });
}

/** pg_advisory_lock key held while migrating ("dbcrate" in ASCII). */
const MIGRATION_LOCK = 0x646263726174;

/**
 * Open the database and apply the migrations not yet applied, each in its own transaction.
 * Every replica does this at start-up: an advisory lock makes them take turns (TypeORM
 * itself does not: two at once collide creating its migrations table).
 */
export async function openMetadataDatabase(url: string): Promise<DataSource> {
  const ds = createDataSource({ url });
  await ds.initialize();
  const lock = ds.createQueryRunner();
  try {
    await lock.connect();
    await lock.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      await ds.runMigrations({ transaction: 'each' });
    } finally {
      await lock.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    }
  } catch (e) {
    await lock.release().catch(() => undefined);
    await ds.destroy();
    throw e;
  }
  await lock.release();
  return ds;
}
