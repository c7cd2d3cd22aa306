// The PITR part's constants, environment knobs and configuration (BENCH_PITR_*); no state.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The checkout's dbcrate (setupPitr() may point a run at a copy of it: BENCH_PITR_SNAPSHOT). */
export const REPO_CLI = join(REPO, 'bin', 'dbcrate.js');
/** The native archive_command client docs/pitr.md recommends with the agent (built by npm run build / build:dev). */
export const REPO_NATIVE = join(REPO, 'dist', 'native', 'dbcrate-wal-push');
export const NODE = process.execPath;

export const PITR_BEGIN =
  '<!-- BEGIN GENERATED PITR by `npm run bench` (bench/run.mjs, bench/pitr.mjs): do not edit by hand -->';
export const PITR_END = '<!-- END GENERATED PITR -->';
export const PITR_STAGES = ['w1', 'w2', 'b1rt', 'rpo'];

const num = (name, dflt, { min = 1 } = {}) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name}=${v}: expected a number ≥ ${min}`);
  return n;
};
export const flag = (name, dflt) => {
  const v = process.env[name];
  return v === undefined || v === '' ? dflt : !['0', 'false', 'no', 'off'].includes(v.toLowerCase());
};

/** The environment knobs of the PITR part, as printed in docs/benchmarks.md (keep in step with pitrConfig). */
export const PITR_KNOBS = [
  ['BENCH_PITR_STAGES', 'w1,w2,b1rt,rpo', 'which stages'],
  ['BENCH_PITR_PARALLEL', '2', 'pgBackRest process-max and dbcrate agent --parallel'],
  ['BENCH_PITR_WAL_PUSH', 'native if built, else node', "dbcrate's archive_command client with the agent"],
  ['BENCH_PITR_W1_SEGMENTS', '40', 'W1 segments'],
  ['BENCH_PITR_W1_ROUNDS', '2', 'W1 rounds (rotating order)'],
  ['BENCH_PITR_W2_SCALE', '50', 'W2 pgbench -i scale'],
  ['BENCH_PITR_W2_SECONDS', '60', 'W2 pgbench -T'],
  ['BENCH_PITR_W2_CLIENTS', '4', 'W2 pgbench -c'],
  ['BENCH_PITR_W2_DRAIN_MAX', '180', 'W2 longest wait for the backlog to drain (s)'],
  ['BENCH_PITR_SCALE', '100', 'B1/RT pgbench -i scale'],
  ['BENCH_PITR_RUNS', '2', 'B1 runs'],
  ['BENCH_PITR_RT_RUNS', '2', 'RT runs'],
  ['BENCH_PITR_RT_WAL_SECONDS', '30', 'pgbench -T after the base backups (WAL to replay)'],
  ['BENCH_PITR_RPO_SECONDS', '60', 'RPO duration'],
  ['BENCH_PITR_RPO_INTERVAL', '2', 'RPO seconds between commits'],
  ['BENCH_PITR_ARCHIVE_TIMEOUT', '10', 'RPO archive_timeout (s)'],
  ['BENCH_PITR_RPO_PGBACKREST', '1', 'RPO for pgBackRest too'],
  ['BENCH_PITR_SNAPSHOT', '1', 'run dbcrate from a copy of bin/ and dist/'],
  ['BENCH_PITR_JSON', '', 'also write the raw measurements to this file'],
  [
    'BENCH_BASE_METHOD',
    '',
    'B1 `dbcrate basebackup --method` (pgdata or pg_basebackup; used only if the CLI has it)',
  ],
];

/** Every size and duration of the PITR part; BENCH_PITR_* environment variables. */
export function pitrConfig() {
  const stages = (process.env.BENCH_PITR_STAGES || PITR_STAGES.join(','))
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  for (const s of stages) {
    if (!PITR_STAGES.includes(s))
      throw new Error(`BENCH_PITR_STAGES: unknown stage ${s} (known: ${PITR_STAGES.join(', ')})`);
  }
  return {
    stages,
    parallel: Math.round(num('BENCH_PITR_PARALLEL', 2)), // pgBackRest process-max, dbcrate agent --parallel
    w1Segments: Math.round(num('BENCH_PITR_W1_SEGMENTS', 40)),
    w1Rounds: Math.round(num('BENCH_PITR_W1_ROUNDS', 2)),
    w2Scale: Math.round(num('BENCH_PITR_W2_SCALE', 50)),
    w2Seconds: Math.round(num('BENCH_PITR_W2_SECONDS', 60)),
    w2Clients: Math.round(num('BENCH_PITR_W2_CLIENTS', 4)),
    w2DrainMax: Math.round(num('BENCH_PITR_W2_DRAIN_MAX', 180)),
    scale: Math.round(num('BENCH_PITR_SCALE', 100)),
    runs: Math.round(num('BENCH_PITR_RUNS', 2)),
    rtRuns: Math.round(num('BENCH_PITR_RT_RUNS', 2)),
    rtWalSeconds: Math.round(num('BENCH_PITR_RT_WAL_SECONDS', 30)),
    rpoSeconds: Math.round(num('BENCH_PITR_RPO_SECONDS', 60)),
    rpoInterval: num('BENCH_PITR_RPO_INTERVAL', 2, { min: 0.1 }),
    archiveTimeout: Math.round(num('BENCH_PITR_ARCHIVE_TIMEOUT', 10)),
    rpoPgBackRest: flag('BENCH_PITR_RPO_PGBACKREST', true),
    baseMethod: (() => {
      const v = (process.env.BENCH_BASE_METHOD || '').trim().toLowerCase();
      if (v && !['pgdata', 'pg_basebackup', 'auto'].includes(v))
        throw new Error(`BENCH_BASE_METHOD=${v}: expected pgdata, pg_basebackup or auto`);
      return v;
    })(),
    // archive_command client with the agent: native (dist/native/dbcrate-wal-push, what
    // docs/pitr.md recommends; the default when built) or node (`dbcrate wal-push`)
    walPush: (() => {
      const v = (process.env.BENCH_PITR_WAL_PUSH || '').toLowerCase();
      if (v && !['native', 'node'].includes(v))
        throw new Error(`BENCH_PITR_WAL_PUSH=${v}: expected native or node`);
      return v || (existsSync(REPO_NATIVE) ? 'native' : 'node');
    })(),
  };
}
