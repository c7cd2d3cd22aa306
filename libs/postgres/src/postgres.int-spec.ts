import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Client } from 'pg';
import { DbcrateError } from '@dbcrate/core';
import { closedPort, sampleDatabase, startPgCluster, type PgCluster } from '@dbcrate/testing';
import {
  connect,
  databaseContents,
  findClientTools,
  isDatabaseEmpty,
  isProductionTarget,
  runPgTool,
  serverInfo,
  spawnPgTool,
  tableChecksums,
  toLibpqEnv,
} from './index';

async function rejection(p: Promise<unknown>): Promise<DbcrateError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(DbcrateError);
    return e as DbcrateError;
  }
  throw new Error('expected a rejection');
}

describe('libs/postgres against a throwaway cluster', () => {
  let pg: PgCluster;
  const open: Client[] = [];
  const connectTracked = async (url: string) => {
    const c = await connect(url);
    open.push(c);
    return c;
  };

  beforeAll(async () => {
    pg = await startPgCluster();
  }, 120_000);
  afterAll(async () => {
    await Promise.all(open.map((c) => c.end().catch(() => undefined)));
    await pg?.stop();
  });

  it('reads server information', async () => {
    const c = await connectTracked(pg.superuserUrl);
    const info = await serverInfo(c);
    expect(info.major).toBe(15);
    expect(info.versionNum).toBeGreaterThanOrEqual(150000);
    expect(info.versionNum).toBeLessThan(160000);
    expect(info.version).toMatch(/^15\.\d+/);
    expect(info.databaseName).toBe('postgres');
    expect(info.inRecovery).toBe(false);
    expect(info.systemIdentifier).toMatch(/^\d{10,}$/); // superuser may read pg_control_system()
  });

  it('leaves systemIdentifier undefined without the privilege, without breaking a transaction', async () => {
    await pg.createDatabase('noctl');
    await pg.psql(`CREATE ROLE plain LOGIN PASSWORD 'plain-pw-123'`);
    // PostgreSQL 15 lets everyone run it by default; hardened servers revoke it.
    await pg.psql('REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC', 'noctl');
    const c = await connectTracked(`postgres://plain:plain-pw-123@127.0.0.1:${pg.port}/noctl`);
    await c.query('BEGIN');
    const info = await serverInfo(c);
    expect(info.systemIdentifier).toBeUndefined();
    await c.query('SELECT 1'); // the transaction is still usable
    await c.query('COMMIT');
  });

  it('tells an empty database from one with a table', async () => {
    const url = await pg.createDatabase('emptiness');
    const c = await connectTracked(url);
    expect(await isDatabaseEmpty(c)).toBe(true);
    await c.query('CREATE TABLE public.t (id int)');
    expect(await isDatabaseEmpty(c)).toBe(false);
    expect(await databaseContents(c)).toMatchObject({ relations: 1, schemas: 0, extensions: 0 });
    await c.query('DROP TABLE public.t; CREATE SCHEMA s');
    expect(await isDatabaseEmpty(c)).toBe(false); // an empty user schema still collides with a restore
    await c.query('DROP SCHEMA s; CREATE FUNCTION public.f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$');
    expect(await isDatabaseEmpty(c)).toBe(false);
    await c.query('DROP FUNCTION public.f(); SELECT lo_create(0)');
    expect(await isDatabaseEmpty(c)).toBe(false);
  });

  it('reads the production marker on new connections', async () => {
    const url = await pg.createDatabase('prod');
    const before = await connectTracked(url);
    expect(await isProductionTarget(before)).toBe(false);
    await pg.psql(`ALTER DATABASE prod SET dbcrate.production = on`);
    const after = await connectTracked(url);
    expect(await isProductionTarget(after)).toBe(true);
    await pg.psql(`ALTER DATABASE prod SET dbcrate.production = 'no'`);
    expect(await isProductionTarget(await connectTracked(url))).toBe(false);
  });

  it('checksums tables deterministically, and sees a change', async () => {
    const url = await pg.createDatabase('sample');
    await sampleDatabase(url, { rows: 300 });
    const c = await connectTracked(url);
    const first = await tableChecksums(c);
    expect(first.map((t) => `${t.schema}.${t.table}`)).toEqual([
      'public.audit',
      'public.blobs',
      'public.customers',
      'shop.orders',
    ]);
    expect(first.find((t) => t.table === 'customers')?.rows).toBe(300);
    expect(first.find((t) => t.table === 'orders')?.rows).toBe(900);
    // Another session with other output settings sees the same hashes.
    const other = await connectTracked(url);
    await other.query(
      `SET TimeZone = 'America/New_York'; SET DateStyle = 'German'; SET bytea_output = 'escape'`,
    );
    expect(await tableChecksums(other)).toEqual(first);
    await c.query(`UPDATE shop.orders SET total = total + 0.001 WHERE id = 7`);
    const second = await tableChecksums(c);
    expect(second.find((t) => t.table === 'orders')?.md5).not.toBe(
      first.find((t) => t.table === 'orders')?.md5,
    );
    expect(second.find((t) => t.table === 'customers')).toEqual(first.find((t) => t.table === 'customers'));
  });

  it('builds the same sample database for the same seed, another for another seed', async () => {
    const [a, b, c] = await Promise.all(['seed_a', 'seed_b', 'seed_c'].map((n) => pg.createDatabase(n)));
    await sampleDatabase(a, { rows: 50, seed: 9 });
    await sampleDatabase(b, { rows: 50, seed: 9 });
    await sampleDatabase(c, { rows: 50, seed: 10 });
    const [ca, cb, cc] = await Promise.all(
      [a, b, c].map(async (u) => tableChecksums(await connectTracked(u))),
    );
    expect(cb).toEqual(ca);
    expect(cc.find((t) => t.table === 'customers')?.md5).not.toBe(
      ca.find((t) => t.table === 'customers')?.md5,
    );
  });

  it('gives the same checksums after a pg_dump | pg_restore round trip with the discovered tools', async () => {
    const src = await pg.createDatabase('rt_src');
    await sampleDatabase(src, { rows: 200, seed: 3 });
    const dst = await pg.createDatabase('rt_dst');
    const tools = await findClientTools(15);
    const dump = spawnPgTool(tools.pgDump, ['--format=custom', '--no-sync'], { env: toLibpqEnv(src).env });
    const dstEnv = toLibpqEnv(dst);
    const restore = spawnPgTool(tools.pgRestore, ['--exit-on-error', '-d', dstEnv.dbnameArg], {
      env: dstEnv.env,
      stdin: 'pipe',
    });
    dump.stdout!.pipe(restore.stdin!);
    await Promise.all([dump.done, restore.done]);
    const a = await connectTracked(src);
    const b = await connectTracked(dst);
    expect(await tableChecksums(b)).toEqual(await tableChecksums(a));
  });

  it('connects over the Unix socket', async () => {
    const c = await connectTracked(
      `postgres://postgres@/postgres?host=${encodeURIComponent(pg.socketDir)}&port=${pg.port}`,
    );
    expect((await serverInfo(c)).databaseName).toBe('postgres');
  });

  describe('errors', () => {
    it('unreachable port → E_DB_UNREACHABLE, quickly, naming the target', async () => {
      const port = await closedPort();
      const t0 = Date.now();
      const e = await rejection(connect(`postgres://u:pw-unreach-1@127.0.0.1:${port}/somedb`));
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(e.code).toBe('E_DB_UNREACHABLE');
      expect(e.message).toContain(`127.0.0.1:${port}/somedb`);
      expect(e.message).toMatch(/refused/i);
      expect(e.hint).toMatch(/running and listening/);
      expect(e.message).not.toContain('pw-unreach-1');
    });

    it('wrong password → E_DB_UNREACHABLE with the server reason, no password anywhere', async () => {
      const wrong = `${pg.password}-wrong`;
      const e = await rejection(
        connect(pg.url('postgres').replace(encodeURIComponent(pg.password), encodeURIComponent(wrong))),
      );
      expect(e.code).toBe('E_DB_UNREACHABLE');
      expect(e.message).toContain(`dbcrate_test@127.0.0.1:${pg.port}/postgres`);
      expect(e.message).toMatch(/password authentication failed/);
      for (const text of [e.message, e.hint ?? '']) {
        expect(text).not.toContain(wrong);
        expect(text).not.toContain(pg.password);
      }
    });

    it('missing password for a scram role → E_DB_UNREACHABLE saying so', async () => {
      const saved = process.env.PGPASSWORD;
      delete process.env.PGPASSWORD;
      try {
        const e = await rejection(connect(`postgres://dbcrate_test@127.0.0.1:${pg.port}/postgres`));
        expect(e.code).toBe('E_DB_UNREACHABLE');
        expect(e.message).toContain('asked for a password and none was given');
      } finally {
        if (saved !== undefined) process.env.PGPASSWORD = saved;
      }
    });

    it('missing database → E_DB_UNREACHABLE with a hint to create it', async () => {
      const e = await rejection(connect(pg.url('nope')));
      expect(e.code).toBe('E_DB_UNREACHABLE');
      expect(e.message).toMatch(/database "nope" does not exist/);
      expect(e.hint).toContain('Create the database "nope"');
    });
  });

  describe('client tools', () => {
    it('finds the exact major on this machine', async () => {
      const t = await findClientTools(15);
      expect(t).toMatchObject({ binDir: '/usr/lib/postgresql/15/bin', major: 15, exactMatch: true });
      expect(t.pgDump).toBe('/usr/lib/postgresql/15/bin/pg_dump');
      expect(t.version).toMatch(/^15\.\d+/);
      expect(t.note).toBeUndefined();
    });

    it('accepts a configured directory and validates it', async () => {
      const t = await findClientTools(15, { binDir: '/usr/lib/postgresql/15/bin' });
      expect(t.exactMatch).toBe(true);
      const missing = await rejection(findClientTools(15, { binDir: '/nonexistent/pg/bin' }));
      expect(missing.code).toBe('E_DB_TOOL_MISSING');
      expect(missing.message).toContain('/nonexistent/pg/bin does not exist');
      const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'dbcrate-nobin-'));
      try {
        const e = await rejection(findClientTools(15, { binDir: empty }));
        expect(e.code).toBe('E_DB_TOOL_MISSING');
        expect(e.message).toContain('missing: pg_dump, pg_restore, psql, pg_basebackup');
      } finally {
        fs.rmSync(empty, { recursive: true, force: true });
      }
    });

    it('refuses tools older than the server, and says so', async () => {
      const e = await rejection(findClientTools(16, { binDir: '/usr/lib/postgresql/15/bin' }));
      expect(e.code).toBe('E_DB_TOOL_MISSING');
      expect(e.message).toMatch(/is version 15\.\d+, older than the server \(PostgreSQL 16\)/);
      expect(e.hint).toContain('apt-get install postgresql-client-16');
    });

    it('falls back to a newer major and says so', async () => {
      const t = await findClientTools(14);
      expect(t).toMatchObject({ major: 15, exactMatch: false });
      expect(t.note).toContain('PostgreSQL 14 client tools are not installed; using 15');
    });

    it('names the missing major and the apt/PGDG way to get it', async () => {
      const e = await rejection(findClientTools(99));
      expect(e.code).toBe('E_DB_TOOL_MISSING');
      expect(e.message).toContain('No PostgreSQL 99 client tools');
      expect(e.message).toContain('/usr/lib/postgresql/99/bin/pg_dump');
      expect(e.hint).toContain('apt-get install postgresql-client-99');
      expect(e.hint).toContain('PGDG');
    });
  });

  describe('running tools', () => {
    it('passes the password in the environment only, never in argv', async () => {
      const tools = await findClientTools(15);
      const { env } = toLibpqEnv(pg.superuserUrl);
      const proc = spawnPgTool(tools.psql, ['-X', '-A', '-t', '-c', 'SELECT pg_sleep(0.5), current_user'], {
        env,
      });
      const cmdline = fs.readFileSync(`/proc/${proc.child.pid}/cmdline`, 'utf8');
      const chunks: Buffer[] = [];
      proc.stdout!.on('data', (c: Buffer) => chunks.push(c));
      await proc.done;
      expect(cmdline).not.toContain(pg.password);
      expect(Buffer.concat(chunks).toString()).toContain('dbcrate_test');
    });

    // spawnPgTool is the one spawner: the pipeline's runTool (pg_dump, pg_restore, pg_basebackup) is built on it.
    it('refuses a password on the command line', () => {
      expect(() => spawnPgTool('/bin/true', ['postgres://u:secret@h/d'], { env: {} })).toThrow(
        /command line/,
      );
    });

    it('turns a failure into E_DB_TOOL_FAILED with the tool, exit code and redacted stderr', async () => {
      const tools = await findClientTools(15);
      const { env } = toLibpqEnv(pg.superuserUrl);
      const e = await rejection(
        runPgTool(tools.psql, ['-X', '-v', 'ON_ERROR_STOP=1'], {
          env,
          input: `SELECT 'postgres://x:${pg.password}@h/d'::int;`,
        }),
      );
      expect(e.code).toBe('E_DB_TOOL_FAILED');
      expect(e.message).toMatch(/^psql exited with code 3:/);
      expect(e.message).toContain('invalid input syntax for type integer');
      expect(e.message).not.toContain(pg.password);
    });

    it('keeps only the tail of a huge stderr', async () => {
      const proc = spawnPgTool(
        '/bin/sh',
        [
          '-c',
          'i=0; while [ $i -lt 3000 ]; do echo "line $i ..............................." >&2; i=$((i+1)); done; exit 7',
        ],
        {
          env: {},
        },
      );
      const e = await rejection(proc.done);
      expect(e.message).toMatch(/^sh exited with code 7:\n/);
      expect(e.message).toContain('line 2999');
      expect(e.message).not.toContain('line 2000 ');
      expect(proc.stderrTail().length).toBeLessThanOrEqual(64 * 1024);
      expect(proc.stderrTail()).not.toContain('line 0 ');
    });

    it('reports a missing binary as E_DB_TOOL_MISSING', async () => {
      const e = await rejection(runPgTool('/nonexistent/pg_dump', ['--version'], { env: {} }));
      expect(e.code).toBe('E_DB_TOOL_MISSING');
    });

    it('stops on abort with E_INTERRUPTED', async () => {
      const ac = new AbortController();
      const proc = spawnPgTool('/bin/sleep', ['30'], { env: {}, signal: ac.signal });
      setTimeout(() => ac.abort(), 100);
      const e = await rejection(proc.done);
      expect(e.code).toBe('E_INTERRUPTED');
    });
  });
});
