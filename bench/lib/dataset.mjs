// The benchmark dataset: pgbench tables (~15% of the bytes; ~100x compressible)
// plus an events table whose rows mix random hex (md5 of random(), incompressible past
// ~2x) with repeated vocabulary (kinds, regions, user references, status strings), so
// that zstd -3 gets a realistic 2-4x on the dump as a whole. Rows are added in batches
// until pg_database_size reaches the target; indexes come last (they count towards the
// size, are not in the dump, and are rebuilt by every restore, as in real life).
import { pgTool, run, cleanPgEnv } from './cluster.mjs';

const MB = 1024 * 1024;
/** pg_database_size growth per pgbench scale unit (accounts + key), measured: ~15 MB. */
const PGBENCH_BYTES_PER_SCALE = 15 * MB;
const PGBENCH_SHARE = 0.15;
/** Approximate heap bytes per events row; only used to size batches. */
const EVENT_ROW_BYTES = 290;

const EVENTS_DDL = `
CREATE TABLE bench_events (
  id         bigint      NOT NULL,
  created_at timestamptz NOT NULL,
  kind       text        NOT NULL,
  region     text        NOT NULL,
  user_ref   text        NOT NULL,
  amount     numeric(12,2),
  session    text        NOT NULL,
  payload    text        NOT NULL
)`;

// One row: ids and timestamps (compressible), a small vocabulary, random strings (a base64
// session id, a base64 request token: ~48 random bytes a row) and a JSON payload that
// otherwise repeats one of a few thousand texts. zstd -3 gets ~3x on this table.
const insertBatch = (lo, hi) => `
INSERT INTO bench_events
SELECT g,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '997 milliseconds',
       (ARRAY['login','logout','view','click','search','purchase','refund','signup','error','export'])[1 + (g % 10)],
       (ARRAY['eu-west-1','eu-central-1','us-east-1','us-west-2','ap-south-1'])[1 + ((g / 7) % 5)],
       'user-' || lpad(((g * 7919) % 250000)::text, 6, '0'),
       CASE WHEN g % 3 = 0 THEN round((random() * 500)::numeric, 2) END,
       encode(decode(md5(random()::text), 'hex'), 'base64'),
       '{"path":"/api/v1/' || (ARRAY['orders','items','users','carts','search'])[1 + (g % 5)] ||
         '","ua":"Mozilla/5.0 (X11; Linux x86_64)","ref":"' || substr(md5((g % 1000)::text), 1, 20) ||
         '","token":"' || encode(decode(md5(random()::text) || md5(random()::text), 'hex'), 'base64') ||
         '","status":' || (ARRAY[200,200,200,201,204,301,404,500])[1 + (g % 8)] || '}'
FROM generate_series(${lo}::bigint, ${hi}::bigint) g`;

/**
 * Create database `name` of at least `targetBytes` (pg_database_size).
 * Returns what was built, for the report.
 */
export async function buildDataset(cluster, name, targetBytes, log = () => {}) {
  const t0 = Date.now();
  await cluster.dropdb(name);
  await cluster.createdb(name);
  const scale = Math.max(1, Math.round((targetBytes * PGBENCH_SHARE) / PGBENCH_BYTES_PER_SCALE));
  log(`  ${name}: pgbench -i -s ${scale}`);
  await run(
    [
      pgTool('pgbench'),
      '-i',
      '-q',
      '-I',
      'dtGvp',
      '-s',
      String(scale),
      '-h',
      cluster.host,
      '-p',
      String(cluster.port),
      '-U',
      cluster.user,
      name,
    ],
    { env: cleanPgEnv() },
  );
  await cluster.psql(name, EVENTS_DDL);
  const batch = Math.max(20000, Math.ceil(targetBytes / EVENT_ROW_BYTES / 12));
  let rows = 0;
  let size = await cluster.dbSize(name);
  while (size < targetBytes) {
    await cluster.psql(name, insertBatch(rows + 1, rows + batch));
    rows += batch;
    size = await cluster.dbSize(name);
    log(`  ${name}: ${rows} event rows, ${(size / MB).toFixed(0)} MB of ${(targetBytes / MB).toFixed(0)} MB`);
  }
  await cluster.psql(name, 'ALTER TABLE bench_events ADD PRIMARY KEY (id)');
  await cluster.psql(name, 'CREATE INDEX bench_events_user_ref ON bench_events (user_ref, created_at)');
  // Freeze and set hint bits now, so the first measured pg_dump does not pay for them.
  await cluster.psql(name, 'VACUUM (FREEZE, ANALYZE) bench_events');
  size = await cluster.dbSize(name);
  const seconds = (Date.now() - t0) / 1000;
  log(`  ${name}: ${(size / MB).toFixed(0)} MB in ${seconds.toFixed(0)} s`);
  return { name, bytes: size, pgbenchScale: scale, eventRows: rows, seconds };
}
