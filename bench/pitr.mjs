// The PITR benchmarks: dbcrate's WAL archiving, base backup and recovery against
// pgBackRest, in one run, on throwaway PostgreSQL 15 clusters (run by bench/run.mjs after
// the backup/restore benchmarks, or alone with `node bench/run.mjs --only pitr`).
//
//   W1  archive_command wall time per 16 MiB segment: dbcrate wal-push (agent running) ÷
//       pgbackrest archive-push; the same real segments, called in sequence as PostgreSQL does.
//   W2  archive backlog (pg_wal/archive_status/*.ready) under a pgbench write load.
//   B1  dbcrate basebackup ÷ pgbackrest backup --type=full, same cluster, same data; with, as
//       context in the same rounds, the stock pipeline dbcrate basebackup replaces
//       (pg_basebackup -Ft -X none | zstd | gpg to the same public key).
//   RT  dbcrate recover --latest --start ÷ pgbackrest restore + start + wait for promotion,
//       same base backup content and the same WAL to replay.
//   RPO delay from a commit to its WAL segment being stored, archive_timeout on.
//
// dbcrate runs exactly as docs/pitr.md describes (archive_command = 'dbcrate wal-push %p
// --config FILE', `dbcrate agent --pgdata DIR --parallel N`, …), as the postgres OS user,
// like PostgreSQL runs archive_command. Every number comes from this run; ratios compare
// measurements of the same run. Environment knobs: see pitrConfig() and docs/benchmarks.md.
import { execFile, execFileSync } from 'node:child_process';
import {
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { cleanPgEnv, freePort, pgTool } from './lib/cluster.mjs';
import { TIME_BIN, measure } from './lib/measure.mjs';
import { PgBackRest, PGBACKREST } from './lib/pgbackrest.mjs';
import {
  CPU_PER_GIB_HEADER,
  CPU_PER_GIB_NOTE,
  cpuPerGiBCells,
  cpuPerGiBRow,
  gap,
  median,
  RANGE_NOTE,
  ratioRange,
  rangeCell,
  writeDoc,
} from './lib/report.mjs';
import {
  ArchiveCluster,
  SEGMENT_BYTES,
  backlogSampler,
  fillSegments,
  freshDirPg,
  killEverythingSync,
  lsnBytes,
  mkdirPg,
  pgEnv,
  pgSpawnOpts,
  pgUser,
  pgbench,
  procCpuSeconds,
  readyCount,
  runPg,
  serverCpuSeconds,
  sleep,
  startDaemon,
  stopDaemon,
  stopDataDirSync,
  trackDataDir,
  treeBytes,
  waitForStrays,
} from './lib/wal.mjs';

const execFileP = promisify(execFile);
const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
// The dbcrate under test. runPitr() points these at a copy of bin/ and dist/ taken at its
// start (BENCH_PITR_SNAPSHOT, default on), so that a rebuild while the benchmark runs
// cannot mix two builds.
let APP = REPO;
let CLI = join(REPO, 'bin', 'dbcrate.js');
/** The native archive_command client docs/pitr.md recommends with the agent (built by npm run build / build:dev). */
let NATIVE = join(REPO, 'dist', 'native', 'dbcrate-wal-push');
const NODE = process.execPath;
const MiB = 1024 * 1024;

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
const flag = (name, dflt) => {
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
      return v || (existsSync(NATIVE) ? 'native' : 'node');
    })(),
  };
}

// ---------------------------------------------------------------- state for cleanup on any exit path
const state = { base: null, keep: false, cleaned: false };

/** Synchronous and idempotent: stop every server, agent and pgBackRest process of this part, remove its temp dir. */
export function pitrCleanupSync() {
  if (state.cleaned || !state.base) return;
  state.cleaned = true;
  killEverythingSync(state.base);
  if (!state.keep) rmSync(state.base, { recursive: true, force: true });
  else console.log(`kept ${state.base} (BENCH_KEEP)`);
}

class StageError extends Error {}

/**
 * Run the PITR stages. ctx: { log, machine(), commandLine, peersOnly, keep, writeDoc, tmp, docPath, jsonPath }.
 * Returns { res, failed, missed }: failed = a stage or a command failed; missed = a target missed.
 */
export async function runPitr(ctx) {
  const { log } = ctx;
  const cfg = pitrConfig();
  const t0 = Date.now();
  const res = {
    startedAt: new Date().toISOString(),
    commandLine: ctx.commandLine,
    config: cfg,
    machine: ctx.machine(),
    versions: {},
    stages: {},
    commands: {},
    notes: [],
    errors: [],
  };
  state.keep = ctx.keep;
  state.base = await mkdtemp(join(ctx.tmp, 'dbcrate-bench-pitr-'));
  const base = state.base;
  const { uid, gid } = pgUser();
  chownSync(base, uid, gid);
  execFileSync('chmod', ['755', base]);
  const logs = join(base, 'logs');
  const home = join(base, 'home');
  const keys = join(base, 'keys');
  for (const d of [logs, home, keys]) mkdirPg(d, 0o700);
  log(`PITR: temp directory ${base}; stages ${cfg.stages.join(', ')}`);
  log(`PITR: config ${JSON.stringify(cfg)}`);

  const envPg = pgEnv(home, { LC_ALL: 'C' });
  const pgbr = new PgBackRest(join(base, 'pgbackrest'), { processMax: cfg.parallel, compressLevel: 3 });
  const short = (text) =>
    text
      .replaceAll(NODE, 'node')
      .replaceAll(APP + '/', '')
      .replaceAll(REPO + '/', '')
      .replaceAll(base, '$TMP');

  // ------------------------------------------------------------ a copy of the build under test
  if (
    !ctx.peersOnly &&
    flag('BENCH_PITR_SNAPSHOT', true) &&
    existsSync(join(REPO, 'dist', 'services', 'cli', 'src', 'main.js'))
  ) {
    const app = join(base, 'dbcrate');
    mkdirSync(app, { recursive: true, mode: 0o755 });
    for (const d of ['bin', 'dist', 'package.json'])
      cpSync(join(REPO, d), join(app, d), { recursive: true, preserveTimestamps: true });
    symlinkSync(join(REPO, 'node_modules'), join(app, 'node_modules'));
    APP = app;
    CLI = join(app, 'bin', 'dbcrate.js');
    NATIVE = join(app, 'dist', 'native', 'dbcrate-wal-push');
    log(
      `PITR: measuring a copy of bin/ and dist/ (${short(app)}; node_modules linked), so that a rebuild during the run cannot interfere`,
    );
    res.notes.push(
      'dbcrate ran from a copy of bin/ and dist/ taken at the start of the run (node_modules linked); ' +
        "the native client's fallback without an agent execs the checkout's bin/dbcrate.js (baked in at build time).",
    );
  }

  // ------------------------------------------------------------ what dbcrate can do right now
  const dbc = { available: {}, problems: [], help: {} };
  if (!ctx.peersOnly) {
    if (!existsSync(join(REPO, 'dist', 'services', 'cli', 'src', 'main.js'))) {
      dbc.problems.push('dbcrate is not built (dist/ is missing): run `npm run build:dev`');
    } else {
      for (const cmd of ['wal-push', 'agent', 'basebackup', 'recover', 'wal-fetch']) {
        try {
          const h = await execFileP(NODE, [CLI, cmd, '--help'], { env: envPg, cwd: REPO, ...pgSpawnOpts() });
          dbc.help[cmd] = h.stdout.toString();
          dbc.available[cmd] = true;
        } catch (e) {
          dbc.available[cmd] = false;
          dbc.problems.push(
            `\`dbcrate ${cmd} --help\` exited ${e.code}: ${(e.stderr || e.stdout || e.message).toString().trim().split('\n').slice(0, 3).join(' / ')}`,
          );
        }
      }
    }
  }
  const has = (...cmds) => !ctx.peersOnly && cmds.every((c) => dbc.available[c]);
  const missing = (...cmds) => cmds.filter((c) => !dbc.available[c]).join(', ');
  if (ctx.peersOnly) res.notes.push('BENCH_PEERS_ONLY=1: dbcrate was not measured (harness test run).');
  for (const p of dbc.problems) log(`PITR: ${p}`);

  // ------------------------------------------------------------ versions, keys
  res.versions = {
    pgbackrest: await pgbr.version().catch((e) => `n/a (${e.message.split('\n')[0]})`),
    server: (() => {
      try {
        return execFileSync(pgTool('postgres'), ['--version'], { encoding: 'utf8' })
          .trim()
          .replace(/^postgres \(PostgreSQL\) /, '');
      } catch {
        return 'n/a';
      }
    })(),
    node: process.version,
    dbcrate: ctx.peersOnly
      ? undefined
      : await execFileP(NODE, [CLI, '--version'], { env: envPg })
          .then((r) => r.stdout.trim())
          .catch(() => 'n/a'),
  };
  let pub = null;
  let priv = null;
  if (!ctx.peersOnly && Object.values(dbc.available).some(Boolean)) {
    try {
      await runPg([NODE, CLI, 'keys', 'generate', '--name', 'bench-pitr', '--out', keys], {
        env: envPg,
        cwd: REPO,
      });
      pub = readdirSync(keys).find((f) => f.endsWith('.pub.asc'));
      priv = readdirSync(keys).find((f) => f.endsWith('.key.asc'));
      if (!pub || !priv)
        throw new Error(`wrote ${readdirSync(keys).join(', ')} (expected *.pub.asc, *.key.asc)`);
      pub = join(keys, pub);
      priv = join(keys, priv);
      // Backups and WAL are signed (docs/signing.md): the host signing key signs, readers trust it.
      await runPg([NODE, CLI, 'keys', 'generate-signing', '--name', 'bench-pitr-host', '--out', keys], {
        env: envPg,
        cwd: REPO,
      });
      envPg.DBCRATE_SIGNING_KEY = join(keys, 'bench-pitr-host.sign.key.asc');
      envPg.DBCRATE_TRUST = join(keys, 'bench-pitr-host.sign.pub.asc');
      log('PITR: keys from `dbcrate keys generate` and `keys generate-signing` (signing on)');
    } catch (e) {
      dbc.problems.push(`dbcrate keys generate: ${short(e.message)}`);
      for (const k of Object.keys(dbc.available)) dbc.available[k] = false;
    }
  }

  /** The dbcrate --config file of a stage: destination and recipient (the agent socket is the default one). */
  const dbcrateConfig = (dir) => {
    const dest = join(dir, 'dest');
    freshDirPg(dest);
    const yaml = join(dir, 'dbcrate.yaml');
    const text = [
      `to: file://${dest}`,
      'recipient:',
      `  - ${pub}`,
      `signing-key: ${envPg.DBCRATE_SIGNING_KEY}`,
      '',
    ].join('\n');
    writeFileSync(yaml, text, { mode: 0o644 });
    chownSync(yaml, uid, gid);
    res.dbcrateYaml ??= short(text);
    return { dest, yaml, dir };
  };
  if (cfg.walPush === 'native' && !ctx.peersOnly && !existsSync(NATIVE))
    throw new Error(`BENCH_PITR_WAL_PUSH=native but ${NATIVE} is not built (npm run build:dev builds it)`);
  /** archive_command for dbcrate: `client` native (the C client) or node (`dbcrate wal-push`). */
  const walPushCommand = (yaml, { client = cfg.walPush, noAgent = false } = {}) =>
    client === 'native'
      ? `${NATIVE} %p --config ${yaml}${noAgent ? ' --no-agent' : ''}`
      : `${NODE} ${CLI} wal-push %p --config ${yaml}${noAgent ? ' --no-agent' : ''}`;
  const clientLabel = (client = cfg.walPush) =>
    client === 'native' ? 'dist/native/dbcrate-wal-push' : 'dbcrate wal-push';

  /** dbcrate agent for a data directory; resolves once its socket exists. */
  const startAgent = async (stageKey, data, dc) => {
    const socket = agentSocketPath(data);
    const argv = [
      NODE,
      CLI,
      'agent',
      '--pgdata',
      data,
      '--parallel',
      String(cfg.parallel),
      '--config',
      dc.yaml,
    ];
    res.commands[`agent (${stageKey})`] ??= short(argv.join(' '));
    const d = startDaemon('dbcrate agent', argv, {
      env: envPg,
      cwd: REPO,
      logFile: join(logs, `agent-${stageKey}-${Date.now()}.log`),
    });
    const t = Date.now();
    let exited = null;
    d.exited.then((r) => (exited = r));
    // ready = listening and its secret written (the client refuses an agent without the secret)
    while (!existsSync(socket) || !existsSync(`${socket}.secret`)) {
      if (exited) {
        throw new StageError(
          `dbcrate agent exited ${exited.code ?? exited.signal} before it listened:\n${tail(d.logFile)}`,
        );
      }
      if (Date.now() - t > 20000) {
        res.notes.push(
          `${stageKey}: the agent's socket ${short(socket)} did not appear within 20 s; measured anyway (wal-push may have worked alone).`,
        );
        break;
      }
      await sleep(50);
    }
    log(`  agent up after ${((Date.now() - t) / 1000).toFixed(2)} s (pid ${d.pid})`);
    return d;
  };
  const stopAgent = async (d) => {
    if (!d) return undefined;
    const cpu = procCpuSeconds(d.pid);
    const r = await stopDaemon(d);
    if (r && typeof r.code === 'number' && ![0, 130, 143].includes(r.code)) {
      res.notes.push(
        `dbcrate agent exited ${r.code} when stopped (SIGTERM): ${tail(d.logFile, 5).replace(/\n/g, ' / ')}`,
      );
    }
    return cpu;
  };

  // ------------------------------------------------------------ timing helper
  let seq = 0;
  const go = async (key, argv, { env = envPg, cwd = REPO, server, sample = false, text } = {}) => {
    const n = ++seq;
    const tag = `${String(n).padStart(3, '0')}-${key.replace(/[^\w.-]+/g, '_')}`;
    const s0 = server ? server() : NaN;
    const m = await measure(argv, {
      env,
      cwd,
      stdout: 'capture',
      sample,
      stderrFile: join(logs, `${tag}.log`),
      timeFile: join(logs, `${tag}.time`),
      ...pgSpawnOpts(),
    });
    m.serverCpu = server ? server() - s0 : NaN;
    res.commands[key] ??= short(text ?? argv.join(' '));
    if (m.code !== 0) {
      const err = tail(join(logs, `${tag}.log`), 25);
      throw new StageError(
        `${key}: exited ${m.code ?? m.signal}: ${short(text ?? argv.join(' '))}\n${err}\n${m.stdout.slice(-2000)}`,
      );
    }
    log(`  ${key.padEnd(26)} ${m.wall.toFixed(2)} s`);
    return m;
  };
  const fail = (stage, side, e) => {
    const msg = short(e.message);
    res.errors.push({ stage, side, message: msg });
    log(`PITR ${stage} (${side}) FAILED: ${msg}`);
  };

  // ------------------------------------------------------------ W1: archive_command per segment
  async function stageW1() {
    const dir = join(base, 'w1');
    mkdirPg(dir);
    const st = (res.stages.w1 = { variants: {}, segments: cfg.w1Segments });
    const c = new ArchiveCluster(join(dir, 'pg'));
    try {
      await c.init();
      await c.startWith({
        archive_mode: 'on',
        archive_command: '/bin/false', // segments stay .ready; the benchmark plays the archiver
        max_wal_size: '16GB',
        wal_compression: 'off',
        fsync: 'off', // WAL content is the same; generation is faster
      });
      pgbr.addStanza('w1', c);
      await pgbr.stanzaCreate('w1');
      pgbr.snapshotArchive('w1');
      log(`W1: writing ${cfg.w1Segments} WAL segments (INSERTs of mixed random/repeated rows)`);
      const segs = await fillSegments(c, cfg.w1Segments, log);
      await c.stop('fast');
      const status = join(c.data, 'pg_wal', 'archive_status');
      // Only the measured segments stay .ready (the others are marked .done, as if archived).
      for (const f of readdirSync(status)) {
        if (f.endsWith('.ready') && !segs.includes(f.slice(0, -6)))
          renameSync(join(status, f), join(status, f.replace(/\.ready$/, '.done')));
      }
      for (const s of segs) {
        if (!existsSync(join(c.data, 'pg_wal', s))) throw new StageError(`W1: segment ${s} is not in pg_wal`);
      }
      st.first = segs[0];
      st.last = segs[segs.length - 1];
      const { stdout } = await execFileP(
        'bash',
        ['-c', 'zstd -q -3 -T1 -c "$@" | wc -c', 'zstd', ...segs.map((s) => join(c.data, 'pg_wal', s))],
        { maxBuffer: 1024 * 1024 },
      );
      st.zstdBytes = Number(stdout.trim());
      st.plainBytes = segs.length * SEGMENT_BYTES;
      log(`W1: segments ${st.first}…${st.last}, zstd -3 ratio ${(st.plainBytes / st.zstdBytes).toFixed(2)}×`);

      // The benchmark plays PostgreSQL's archiver: for each segment in order, /bin/sh -c the
      // archive_command with %p = pg_wal/<segment>, in the data directory; on success rename
      // .ready to .done. ONE=1: the .ready file is created just before the call (no backlog).
      const LOOP = `
p=%p
for f in "$@"; do
  if [ "$ONE" = 1 ]; then : > "pg_wal/archive_status/$f.ready"; fi
  cmd=\${CMD//"$p"/pg_wal/$f}
  t0=$EPOCHREALTIME
  /bin/sh -c "$cmd"
  rc=$?
  t1=$EPOCHREALTIME
  echo "$f $t0 $t1 $rc"
  if [ $rc -ne 0 ]; then echo "archive_command failed for $f (exit $rc): $cmd" >&2; exit 10; fi
  mv "pg_wal/archive_status/$f.ready" "pg_wal/archive_status/$f.done"
done`;
      const dc = has('wal-push') ? dbcrateConfig(dir) : null;
      const variants = [
        {
          key: 'pgbr',
          tool: 'pgbr',
          cmd: pgbr.archiveCommand('w1', { sync: true }),
          label: 'pgBackRest archive-push (archive-async=n)',
        },
        {
          key: 'pgbr-async',
          tool: 'pgbr',
          cmd: pgbr.archiveCommand('w1'),
          label: `pgBackRest archive-push, archive-async=y, process-max=${cfg.parallel} (all segments ready)`,
        },
        ...(dc
          ? [
              {
                key: 'dbcrate',
                tool: 'dbcrate',
                agent: true,
                cmd: walPushCommand(dc.yaml),
                label: `${clientLabel()}, agent --parallel ${cfg.parallel} running (all segments ready)`,
              },
              ...(cfg.walPush === 'native'
                ? [
                    {
                      key: 'dbcrate-node',
                      tool: 'dbcrate',
                      agent: true,
                      cmd: walPushCommand(dc.yaml, { client: 'node' }),
                      label: `dbcrate wal-push (node), agent --parallel ${cfg.parallel} running (all segments ready)`,
                    },
                  ]
                : []),
              {
                key: 'dbcrate-one',
                tool: 'dbcrate',
                agent: true,
                one: true,
                cmd: walPushCommand(dc.yaml),
                label: `${clientLabel()}, agent running, one segment ready at a time`,
              },
              {
                key: 'dbcrate-noagent',
                tool: 'dbcrate',
                cmd: walPushCommand(dc.yaml, { client: 'node', noAgent: true }),
                label: 'dbcrate wal-push --no-agent',
              },
            ]
          : []),
      ];
      if (!dc && !ctx.peersOnly)
        fail(
          'W1',
          'dbcrate',
          new Error(
            `dbcrate side not measured: ${missing('wal-push', 'agent')} not available (${dbc.problems.join('; ')})`,
          ),
        );
      for (let round = 0; round < cfg.w1Rounds; round++) {
        const order = variants
          .slice(round % variants.length)
          .concat(variants.slice(0, round % variants.length));
        for (const v of order) {
          if (v.broken) continue;
          const out = (st.variants[v.key] ??= {
            label: v.label,
            calls: [],
            roundMedians: [],
            cpu: [],
            agentCpu: [],
            storedBytes: null,
          });
          // back to: the measured segments .ready (or no status at all), empty archive
          for (const s of segs) {
            for (const suf of ['.ready', '.done']) rmSync(join(status, s + suf), { force: true });
            if (!v.one) {
              writeFileSync(join(status, `${s}.ready`), '');
              chownSync(join(status, `${s}.ready`), uid, gid);
            }
          }
          if (v.tool === 'pgbr') pgbr.resetArchive('w1');
          else freshDirPg(dc.dest);
          execFileSync('sync');
          let agent = null;
          try {
            if (v.agent) agent = await startAgent('w1', c.data, dc);
            const cpu0 = agent ? procCpuSeconds(agent.pid) : 0;
            log(`W1 round ${round + 1}/${cfg.w1Rounds}: ${v.label}`);
            const m = await go(`W1:${v.key}`, ['bash', '-c', LOOP, 'w1-archiver', ...segs], {
              env: { ...envPg, CMD: v.cmd, ONE: v.one ? '1' : '0' },
              cwd: c.data,
              text: `archive_command = '${v.cmd}'   (the benchmark runs it for each segment: /bin/sh -c in the data directory, %p = pg_wal/<segment>)`,
            });
            if (agent) out.agentCpu.push(procCpuSeconds(agent.pid) - cpu0);
            const calls = m.stdout
              .trim()
              .split('\n')
              .map((l) => l.split(' '))
              .filter((f) => f.length === 4)
              .map(([seg, a, b]) => ({ seg, ms: (Number(b) - Number(a)) * 1000 }));
            if (calls.length !== segs.length)
              throw new StageError(`W1:${v.key}: ${calls.length} calls timed, expected ${segs.length}`);
            out.calls.push(...calls.map((x) => x.ms));
            out.roundMedians.push(median(calls.map((x) => x.ms)));
            (out.roundWalls ??= []).push(m.wall);
            out.cpu.push(m.time?.cpu);
            out.wall = (out.wall ?? 0) + m.wall;
            log(`  median ${median(calls.map((x) => x.ms)).toFixed(1)} ms per call`);
          } catch (e) {
            fail('W1', v.key, e);
            v.broken = true;
          } finally {
            await stopAgent(agent);
            if (v.tool === 'pgbr') await waitForStrays(pgbr.conf, 30000);
          }
          if (v.broken) continue;
          // what was stored (and that all of it was)
          const stored =
            v.tool === 'pgbr'
              ? pgbr.archivedBytes('w1', segs)
              : treeBytes(dc.dest, (f) => segs.includes(f.slice(0, 24)) && f.endsWith('.zst.pgp'));
          out.storedBytes = stored.bytes;
          out.storedFiles = stored.files;
          if (stored.files !== segs.length) {
            fail(
              'W1',
              v.key,
              new Error(`${stored.files} of ${segs.length} segments found in the destination after the run`),
            );
            v.broken = true;
          }
        }
      }
    } finally {
      c.stopSync();
      await waitForStrays(pgbr.conf, 15000);
      if (!ctx.keep) rmSync(dir, { recursive: true, force: true });
    }
  }

  // ------------------------------------------------------------ W2: backlog under a pgbench load
  async function stageW2() {
    const dir = join(base, 'w2');
    mkdirPg(dir);
    const st = (res.stages.w2 = {
      tools: {},
      scale: cfg.w2Scale,
      seconds: cfg.w2Seconds,
      clients: cfg.w2Clients,
    });
    const tools = [
      { key: 'pgbr', label: `pgBackRest archive-push, archive-async=y, process-max=${cfg.parallel}` },
      ...(has('wal-push', 'agent')
        ? [{ key: 'dbcrate', label: `${clientLabel()} + agent --parallel ${cfg.parallel}` }]
        : []),
    ];
    if (!has('wal-push', 'agent') && !ctx.peersOnly)
      fail(
        'W2',
        'dbcrate',
        new Error(`dbcrate side not measured: ${missing('wal-push', 'agent')} not available`),
      );
    // One fresh cluster per tool, one after the other, archiving from the first write on:
    // the bulk load (pgbench -i) and then the pgbench run are both archived.
    for (const t of tools) {
      const c = new ArchiveCluster(join(dir, t.key));
      const dc = t.key === 'dbcrate' ? dbcrateConfig(dir) : null;
      const archiveCommand = t.key === 'pgbr' ? pgbr.archiveCommand('w2') : walPushCommand(dc.yaml);
      const settings = {
        archive_mode: 'on',
        archive_command: archiveCommand,
        archive_timeout: '0',
        max_wal_size: '16GB',
        wal_compression: 'off',
      };
      st.settings ??= Object.entries(settings)
        .filter(([k]) => k !== 'archive_command')
        .map(([k, v]) => `${k}=${v}`)
        .join(', ');
      res.commands[`W2 ${t.key}`] = `archive_command = '${short(archiveCommand)}'`;
      res.commands['W2 load'] =
        `pgbench -i -I dtGvp -s ${cfg.w2Scale}, then pgbench -n -T ${cfg.w2Seconds} -c ${cfg.w2Clients} -j 2`;
      let agent = null;
      const out = (st.tools[t.key] = { label: t.label });
      try {
        await c.init();
        await c.startWith(settings);
        if (t.key === 'pgbr') {
          pgbr.addStanza('w2', c);
          await pgbr.stanzaCreate('w2');
        } else agent = await startAgent('w2', c.data, dc);
        await c.psql('postgres', 'CHECKPOINT');
        execFileSync('sync');
        const a0 = await c.archiver();
        const lsn0 = await c.lsn();
        log(
          `W2 ${t.label}: pgbench -i -s ${cfg.w2Scale}, then pgbench -T ${cfg.w2Seconds} -c ${cfg.w2Clients} -j 2`,
        );
        const sampler = backlogSampler(c.data, 1000);
        const tl = Date.now();
        await pgbench(c, ['-i', '-q', '-I', 'dtGvp', '-s', String(cfg.w2Scale)]);
        out.initSeconds = (Date.now() - tl) / 1000;
        out.backlogAfterInit = readyCount(c.data);
        const pb = await pgbench(c, [
          '-n',
          '-T',
          String(cfg.w2Seconds),
          '-c',
          String(cfg.w2Clients),
          '-j',
          '2',
        ]);
        const loadSeconds = (Date.now() - tl) / 1000;
        out.final = readyCount(c.data);
        const a1 = await c.archiver();
        const lsn1 = await c.lsn();
        // drain: until nothing is .ready any more
        const td = Date.now();
        while (readyCount(c.data) > 0 && Date.now() - td < cfg.w2DrainMax * 1000) await sleep(250);
        out.drainSeconds = readyCount(c.data) === 0 ? (Date.now() - td) / 1000 : NaN;
        const a2 = await c.archiver();
        const samples = sampler.stop();
        const inInit = samples.filter((x) => x.t <= out.initSeconds);
        const inRun = samples.filter((x) => x.t > out.initSeconds && x.t <= loadSeconds);
        const during = samples.filter((x) => x.t <= loadSeconds);
        const mx = (xs) => (xs.length ? Math.max(...xs.map((x) => x.ready)) : NaN);
        out.max = mx(samples);
        out.maxInit = mx(inInit);
        out.maxRun = mx(inRun);
        out.meanDuringLoad = during.reduce((a, x) => a + x.ready, 0) / during.length;
        out.samples = samples;
        out.tps = pb.tps;
        out.loadSeconds = loadSeconds;
        out.walSegments = (lsnBytes(lsn1) - lsnBytes(lsn0)) / SEGMENT_BYTES;
        out.walPerSecond = out.walSegments / loadSeconds;
        out.archivedDuringLoad = a1.archived - a0.archived;
        out.archivedPerSecond = out.archivedDuringLoad / loadSeconds;
        out.archivedTotal = a2.archived - a0.archived;
        out.failed = a2.failed - a0.failed;
        if (agent) out.agentCpu = procCpuSeconds(agent.pid);
        log(
          `  backlog max ${out.max} (bulk load ${out.maxInit}, pgbench run ${out.maxRun}), at the end ${out.final}, drained in ` +
            `${Number.isFinite(out.drainSeconds) ? out.drainSeconds.toFixed(1) + ' s' : 'not within the limit'}; ${out.walSegments.toFixed(1)} segments written, ` +
            `${out.archivedPerSecond.toFixed(2)} archived/s during the load; pgbench -i ${out.initSeconds.toFixed(0)} s, run ${out.tps.toFixed(0)} tps; archive failures ${out.failed}`,
        );
        if (out.failed > 0)
          res.notes.push(
            `W2 ${t.key}: archive_command failed ${out.failed}× (PostgreSQL retried); last failed ${a2.lastFailed}; see the server log.`,
          );
      } catch (e) {
        fail('W2', t.key, e);
        out.error = true;
      } finally {
        if (agent) {
          const cpu = await stopAgent(agent);
          out.agentCpu ??= cpu;
        }
        c.stopSync();
        await waitForStrays(pgbr.conf, 15000);
        if (!ctx.keep) rmSync(c.root, { recursive: true, force: true });
      }
    }
    if (!ctx.keep) rmSync(dir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------ B1 + RT: base backup, then recovery
  async function stageB1RT() {
    const dir = join(base, 'bt');
    mkdirPg(dir);
    const st = (res.stages.b1 = { runs: {}, scale: cfg.scale });
    const rt = (res.stages.rt = { runs: {} });
    const c = new ArchiveCluster(join(dir, 'pg'));
    const withDbcrate = has('wal-push', 'basebackup');
    let agent;
    if (!withDbcrate && !ctx.peersOnly)
      fail(
        'B1',
        'dbcrate',
        new Error(`dbcrate side not measured: ${missing('wal-push', 'basebackup')} not available`),
      );
    try {
      await c.init();
      await c.startWith({ fsync: 'off', max_wal_size: '16GB' });
      log(`B1: pgbench -i -s ${cfg.scale}`);
      const ti = Date.now();
      await pgbench(c, ['-i', '-q', '-I', 'dtGvp', '-s', String(cfg.scale)]);
      st.initSeconds = (Date.now() - ti) / 1000;
      await c.psql('postgres', 'CHECKPOINT');
      await c.stop('fast');
      const dc = withDbcrate ? dbcrateConfig(dir) : null;
      // Every segment goes to both, each in its own asynchronous mode (like with like):
      // pgBackRest archive-async=y, dbcrate's archive_command client with its agent running.
      const archiveCommand = [pgbr.archiveCommand('bt'), ...(dc ? [walPushCommand(dc.yaml)] : [])].join(
        ' && ',
      );
      res.commands['B1/RT archive_command'] = `archive_command = '${short(archiveCommand)}'`;
      await c.startWith({
        archive_mode: 'on',
        archive_command: archiveCommand,
        max_wal_size: '16GB',
        wal_compression: 'off',
      });
      if (dc) agent = await startAgent('bt', c.data, dc);
      pgbr.addStanza('bt', c);
      await pgbr.stanzaCreate('bt');
      await c.switchAndWaitArchived(120000); // the archive works before anything is timed
      st.dbBytes = await c.dbSize('postgres');
      const server = () => c.cpuSeconds();
      // Context line: the stock-tools pipeline dbcrate basebackup replaces, the same
      // pg_basebackup tar stream (-X none: the WAL comes from the archive) through zstd -3
      // with dbcrate's default thread count and gpg to the same public key, run as postgres.
      const stock = dc ? await stockPrepare(dir, c) : null;
      if (stock) st.stockThreads = stock.threads;
      // --method exists only in newer CLIs: pass it when asked for and the CLI lists it.
      const methodArgs = [];
      if (cfg.baseMethod) {
        if (/--method\b/.test(dbc.help.basebackup || '')) methodArgs.push('--method', cfg.baseMethod);
        else
          res.notes.push(
            `BENCH_BASE_METHOD=${cfg.baseMethod} ignored: \`dbcrate basebackup\` has no --method option.`,
          );
      }
      st.baseMethod = methodArgs[1] ?? 'default';
      const cmds = {
        pgbr: () => go('B1:pgbr', pgbr.argv('bt', 'backup', '--type=full'), { env: pgbr.env(), server }),
        dbcrate: () =>
          go(
            'B1:dbcrate',
            [
              NODE,
              CLI,
              'basebackup',
              '--db',
              c.url('postgres'),
              '--to',
              `file://${dc.dest}`,
              '--recipient',
              pub,
              ...methodArgs,
            ],
            {
              server,
              sample: true,
            },
          ),
        stock: () => {
          const out = join(stock.outDir, `base-${++stock.n}.tar.zst.gpg`);
          stock.last = out;
          return go('B1:stock', ['bash', '-c', STOCK_PIPE, 'b1-stock'], {
            env: { ...envPg, ...stock.env, OUT: out },
            server,
            text: stock.text,
          });
        },
      };
      const order = dc ? ['pgbr', 'dbcrate', ...(stock ? ['stock'] : [])] : ['pgbr'];
      for (let i = 0; i < cfg.runs; i++) {
        const o = order.slice(i % order.length).concat(order.slice(0, i % order.length));
        log(`B1 round ${i + 1}/${cfg.runs}: ${o.join(', ')}`);
        for (const k of o) {
          if (st.runs[k]?.broken) continue;
          await c.psql('postgres', 'CHECKPOINT');
          execFileSync('sync');
          const r = (st.runs[k] ??= { walls: [], cpu: [], serverCpu: [], rssMiB: [] });
          try {
            // The agent archives the WAL that dbcrate's own backup waits for: its CPU meanwhile
            // counts as dbcrate's (pgBackRest's detached async worker is not counted).
            const a0 = k === 'dbcrate' && agent ? procCpuSeconds(agent.pid) : NaN;
            const m = await cmds[k]();
            const agentCpu = k === 'dbcrate' && agent ? procCpuSeconds(agent.pid) - a0 : 0;
            if (k === 'dbcrate' && agent) (r.agentCpu ??= []).push(agentCpu);
            r.walls.push(m.wall);
            r.cpu.push(
              m.time?.cpu === undefined ? undefined : m.time.cpu + (Number.isFinite(agentCpu) ? agentCpu : 0),
            );
            r.serverCpu.push(m.serverCpu);
            if (m.proc) r.rssMiB.push(m.proc.hwmKiB / 1024);
            if (k === 'dbcrate') r.stdout = m.stdout.trim().split('\n').slice(-3).join(' / ');
          } catch (e) {
            fail('B1', k, e);
            r.broken = true;
          }
        }
      }
      const last = pgbr.backups('bt').pop();
      if (last) st.runs.pgbr.storedBytes = pgbr.backupBytes('bt', last).bytes;
      if (dc) {
        const b = treeBytes(dc.dest, (f, p) => p.includes('/base/') && f.endsWith('.pgp'));
        // one base backup, on average (a pgdata backup is several parts: count manifests)
        const n = treeBytes(dc.dest, (f, p) => p.includes('/base/') && f === 'backup.manifest.json').files;
        if (n) st.runs.dbcrate.storedBytes = b.bytes / n;
      }
      if (stock?.last && st.runs.stock?.walls.length && !st.runs.stock.broken) {
        st.runs.stock.storedBytes = statSync(stock.last).size;
        await stockCheck(stock, st.runs.stock);
      }

      // ---- RT: WAL after the backups, archived to both, then recover to the end of it
      log(`RT: pgbench -T ${cfg.rtWalSeconds} -c 4 -j 2 to write WAL after the base backups`);
      const lsn0 = await c.lsn();
      const pb = await pgbench(c, ['-n', '-T', String(cfg.rtWalSeconds), '-c', '4', '-j', '2']);
      rt.tps = pb.tps;
      const check = async (q) =>
        q(
          "SELECT (SELECT count(*) FROM pgbench_history) || '/' || (SELECT sum(abalance) FROM pgbench_accounts) || '/' || (SELECT sum(tbalance) FROM pgbench_tellers)",
        );
      const expected = await check((sql) => c.psql('postgres', sql));
      const lastSeg = await c.switchAndWaitArchived(600000);
      rt.walBytes = lsnBytes(await c.lsn()) - lsnBytes(lsn0);
      rt.lastSegment = lastSeg;
      rt.expected = expected;
      await c.stop('fast');
      await stopAgent(agent);
      agent = undefined;
      await waitForStrays(pgbr.conf, 30000);
      const rtDir = join(dir, 'rt');
      mkdirPg(rtDir);
      const psqlAt = (port) => (sql) =>
        execFileP(
          pgTool('psql'),
          [
            '-X',
            '-q',
            '-At',
            '-h',
            '127.0.0.1',
            '-p',
            String(port),
            '-U',
            'postgres',
            '-d',
            'postgres',
            '-c',
            sql,
          ],
          {
            env: cleanPgEnv(),
          },
        ).then((r) => r.stdout.trim());
      const RT_PGBR = `set -e
"$PGBR" --config="$CONF" --stanza=bt --pg1-path="$DIR" restore
"$PG_CTL" -D "$DIR" -l "$DIR.log" -w -t 3600 -o "-c port=$PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$SOCK" start > /dev/null
# promoted = the startup process has exited and the postmaster logged "ready to accept
# connections" (not "… read-only connections", which is hot standby during the replay);
# a grep every 50 ms costs next to nothing beside the replay
until grep -qF 'database system is ready to accept connections' "$DIR.log"; do
  if [ ! -f "$DIR/postmaster.pid" ]; then echo "the server stopped during recovery:" >&2; tail -20 "$DIR.log" >&2; exit 1; fi
  sleep 0.05
done`;
      const withRecover = dc && has('recover', 'wal-fetch');
      if (dc && !withRecover)
        fail(
          'RT',
          'dbcrate',
          new Error(`dbcrate side not measured: ${missing('recover', 'wal-fetch')} not available`),
        );
      const rtCmds = {
        pgbr: async (target, port) => {
          const m = await go('RT:pgbr', ['bash', '-c', RT_PGBR], {
            env: {
              ...pgbr.env(),
              LC_ALL: 'C',
              PGBR: PGBACKREST,
              CONF: pgbr.conf,
              DIR: target,
              PORT: String(port),
              SOCK: rtDir,
              PG_CTL: pgTool('pg_ctl'),
              PSQL: pgTool('psql'),
            },
            text:
              `pgbackrest --config=$TMP/pgbackrest/pgbackrest.conf --stanza=bt --pg1-path=DIR restore && ` +
              `pg_ctl -D DIR -l DIR.log -w start -o "-c port=P …" && until grep -qF 'database system is ready to accept connections' DIR.log; do sleep 0.05; done`,
          });
          return m;
        },
        dbcrate: (target, port) =>
          go(
            'RT:dbcrate',
            [
              NODE,
              CLI,
              'recover',
              '--from',
              `file://${dc.dest}`,
              '--key',
              priv,
              '--target-dir',
              target,
              '--latest',
              '--start',
              '--port',
              String(port),
            ],
            {
              sample: true,
            },
          ),
      };
      const rtOrder = withRecover ? ['pgbr', 'dbcrate'] : ['pgbr'];
      for (let i = 0; i < cfg.rtRuns; i++) {
        const o = rtOrder.slice(i % rtOrder.length).concat(rtOrder.slice(0, i % rtOrder.length));
        log(`RT round ${i + 1}/${cfg.rtRuns}: ${o.join(', ')}`);
        for (const k of o) {
          const r = (rt.runs[k] ??= { walls: [], cpu: [], serverCpu: [], checked: [] });
          if (r.broken) continue;
          const target = join(rtDir, `${k}-${i}`);
          freshDirPg(target, 0o700);
          trackDataDir(target);
          const port = await freePort();
          execFileSync('sync');
          try {
            const m = await rtCmds[k](target, port);
            r.walls.push(m.wall);
            r.cpu.push(m.time?.cpu);
            r.serverCpu.push(serverCpuSeconds(target)); // the restored server: startup (replay) + the rest
            const q = psqlAt(port);
            const inRecovery = await q('SELECT pg_is_in_recovery()');
            if (inRecovery !== 'f')
              throw new StageError(
                `RT ${k}: the server was still in recovery when the command returned (the time would not count the replay)`,
              );
            const got = await check(q);
            r.checked.push(got === expected);
            if (got !== expected) {
              fail(
                'RT',
                k,
                new Error(
                  `recovered cluster has ${got} (history rows/abalance sum/tbalance sum), the source had ${expected}`,
                ),
              );
              r.broken = true;
            }
          } catch (e) {
            fail('RT', k, e);
            r.broken = true;
          } finally {
            stopDataDirSync(target);
            if (!ctx.keep) {
              rmSync(target, { recursive: true, force: true });
              rmSync(`${target}.log`, { force: true });
            }
            await waitForStrays(pgbr.conf, 15000);
          }
        }
      }
    } finally {
      c.stopSync();
      await stopAgent(agent);
      await waitForStrays(pgbr.conf, 15000);
      await gpgKillAgents();
      if (!ctx.keep) rmSync(dir, { recursive: true, force: true });
    }
  }

  // ------------------------------------------------------------ B1 stock pipeline (context)
  const gpgHomes = [];
  /** Stop the gpg-agent of every throwaway GNUPGHOME of this run (one only runs after a decryption). */
  const gpgKillAgents = async () => {
    for (const h of gpgHomes.splice(0)) {
      await runPg(['gpgconf', '--homedir', h, '--kill', 'all'], { env: { ...envPg, GNUPGHOME: h } }).catch(
        () => undefined,
      );
    }
  };
  /** A new GNUPGHOME (mode 700, owned by postgres) in the stage directory. */
  const gpgHome = (d) => {
    freshDirPg(d, 0o700);
    gpgHomes.push(d);
    return d;
  };
  /**
   * The stock pipeline's environment and printable command; null (with a note) if gpg or zstd
   * cannot run here. Creates the keybox before anything is timed.
   */
  async function stockPrepare(dir, c) {
    const threads = zstdDefaultThreads();
    const home = gpgHome(join(dir, 'gnupg'));
    const outDir = join(dir, 'stock');
    mkdirPg(outDir);
    const env = {
      GNUPGHOME: home,
      PG_BASEBACKUP: pgTool('pg_basebackup'),
      CONNINFO: c.conninfo('postgres'),
      THREADS: String(threads),
      PUB: pub,
    };
    try {
      await runPg(['gpg', '--batch', '--list-keys'], { env: { ...envPg, GNUPGHOME: home } });
      await runPg(['zstd', '--version'], { env: envPg });
    } catch (e) {
      res.notes.push(`B1: the stock pipeline was not measured: ${short(e.message)}`);
      return null;
    }
    res.versions.stock = await Promise.all([
      execFileP(pgTool('pg_basebackup'), ['--version']).then((r) =>
        r.stdout.trim().replace(/^pg_basebackup \(PostgreSQL\) /, ''),
      ),
      execFileP('zstd', ['--version']).then(
        (r) => (/v(\d[\w.]*)/.exec(r.stdout) ?? [])[1] ?? r.stdout.trim(),
      ),
      execFileP('gpg', ['--version']).then((r) => r.stdout.split('\n')[0].replace(/^gpg \(GnuPG\) /, '')),
    ])
      .then(([a, b, g]) => `${a} / ${b} / ${g}`)
      .catch(() => 'n/a');
    return {
      env,
      threads,
      outDir,
      home,
      n: 0,
      last: null,
      text:
        `GNUPGHOME=${short(home)} (throwaway, empty) bash -c 'set -o pipefail; ` +
        `pg_basebackup -d "${c.conninfo('postgres')}" -D - -Ft -X none --checkpoint=fast | zstd -3 -T${threads} | ` +
        `gpg --batch --trust-model always --encrypt --recipient-file ${short(pub)} > ${short(outDir)}/base-N.tar.zst.gpg'`,
    };
  }
  /**
   * Not timed: the last stock backup decrypts with dbcrate's private key (imported into another
   * throwaway GNUPGHOME) and is a pg_basebackup tar with backup_label and backup_manifest.
   */
  async function stockCheck(stock, r) {
    const home = gpgHome(join(stock.outDir, 'gnupg-check'));
    const env = { ...envPg, GNUPGHOME: home };
    try {
      await runPg(['gpg', '--batch', '--quiet', '--import', priv], { env });
      const { stdout } = await runPg(
        [
          'bash',
          '-c',
          'set -o pipefail; gpg --batch --quiet --pinentry-mode loopback --passphrase "" --decrypt "$1" | zstd -d -q | tar -t',
          'b1-stock-check',
          stock.last,
        ],
        { env },
      );
      const names = stdout.split('\n');
      r.checked = ['backup_label', 'backup_manifest'].every((n) => names.includes(n));
      if (!r.checked)
        res.notes.push(
          `B1: the stock pipeline's output decrypted, but its tar lacks backup_label or backup_manifest (${names.length} entries).`,
        );
    } catch (e) {
      r.checked = false;
      res.notes.push(`B1: the stock pipeline's output did not decrypt and list: ${short(e.message)}`);
    } finally {
      await gpgKillAgents();
    }
  }

  // ------------------------------------------------------------ RPO: commit → segment stored
  async function stageRPO() {
    const dir = join(base, 'rpo');
    mkdirPg(dir);
    const st = (res.stages.rpo = {
      tools: {},
      archiveTimeout: cfg.archiveTimeout,
      seconds: cfg.rpoSeconds,
      interval: cfg.rpoInterval,
    });
    const tools = [...(has('wal-push', 'agent') ? ['dbcrate'] : []), ...(cfg.rpoPgBackRest ? ['pgbr'] : [])];
    if (!has('wal-push', 'agent') && !ctx.peersOnly)
      fail(
        'RPO',
        'dbcrate',
        new Error(`dbcrate side not measured: ${missing('wal-push', 'agent')} not available`),
      );
    // PostgreSQL 15 starts the checkpointer while the startup process still runs; if its first
    // sleep is computed then, it sleeps for checkpoint_timeout and archive_timeout forces no
    // segment switch until something wakes it (seen here). The first cluster probes whether
    // that happens; every RPO cluster then gets a pg_reload_conf() (SIGHUP wakes the
    // checkpointer) right after it starts, so both tools see archive_timeout honoured.
    let probed = false;
    const walfile = async (c) => {
      await c.psql('postgres', 'INSERT INTO rpo_probe VALUES (1)');
      return c.psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_flush_lsn())');
    };
    const switches = async (c) => {
      await c.psql('postgres', 'CREATE TABLE IF NOT EXISTS rpo_probe (a int)');
      const a = await walfile(c);
      await sleep((cfg.archiveTimeout + 3) * 1000);
      const b = await walfile(c);
      return a !== b;
    };
    for (const tool of tools) {
      const c = new ArchiveCluster(join(dir, tool));
      const dc = tool === 'dbcrate' ? dbcrateConfig(join(dir)) : null;
      const out = (st.tools[tool] = {
        label:
          tool === 'pgbr'
            ? `pgBackRest archive-push, archive-async=y, process-max=${cfg.parallel}`
            : `${clientLabel()} + agent --parallel ${cfg.parallel}`,
      });
      let agent = null;
      try {
        await c.init();
        const archiveCommand = tool === 'pgbr' ? pgbr.archiveCommand('rpo') : walPushCommand(dc.yaml);
        res.commands[`RPO ${tool}`] =
          `archive_command = '${short(archiveCommand)}', archive_timeout = ${cfg.archiveTimeout}s`;
        const settings = {
          archive_mode: 'on',
          archive_command: archiveCommand,
          archive_timeout: `${cfg.archiveTimeout}s`,
          wal_compression: 'off',
        };
        await c.startWith(settings);
        if (!probed) {
          probed = true;
          log(
            `RPO: does archive_timeout=${cfg.archiveTimeout}s switch segments right after a start (no SIGHUP)?`,
          );
          st.switchesWithoutReload = await switches(c);
          if (!st.switchesWithoutReload) {
            await c.psql('postgres', 'SELECT pg_reload_conf()');
            await sleep(500);
            st.switchesAfterReload = await switches(c);
            const msg =
              `RPO: right after the server started, archive_timeout=${cfg.archiveTimeout}s forced no segment switch within ${cfg.archiveTimeout + 3} s ` +
              `of a commit; after pg_reload_conf() (SIGHUP wakes the checkpointer) it ${st.switchesAfterReload ? 'did' : 'still did not'}. ` +
              'PostgreSQL 15 starts the checkpointer during startup; a sleep computed then lasts checkpoint_timeout. ' +
              'Every RPO cluster got a pg_reload_conf() right after its start. This affects any archiver (dbcrate and pgBackRest alike) after a restart.';
            res.notes.push(msg);
            log(msg);
            if (!st.switchesAfterReload) throw new StageError(msg);
          }
        }
        await c.psql('postgres', 'SELECT pg_reload_conf()');
        await sleep(500);
        if (tool === 'pgbr') {
          pgbr.addStanza('rpo', c);
          await pgbr.stanzaCreate('rpo');
        } else agent = await startAgent('rpo', c.data, dc);
        await c.psql('postgres', 'CREATE TABLE rpo_t (id bigserial PRIMARY KEY, at timestamptz NOT NULL)');
        await c.switchAndWaitArchived(120000); // first push done (stanza / cluster.json), agent warm
        const sysid = await c.psql('postgres', 'SELECT system_identifier FROM pg_control_system()');
        const walDir = () => {
          const d = join(dc.dest, sysid, 'wal');
          if (existsSync(d)) return d;
          for (const e of readdirSync(dc.dest))
            if (existsSync(join(dc.dest, e, 'wal'))) return join(dc.dest, e, 'wal');
          return null;
        };
        const stored =
          tool === 'pgbr'
            ? (seg) => pgbr.findWal('rpo', seg) !== null
            : (() => {
                return (seg, listing) =>
                  listing.some((f) => f.startsWith(`${seg}-`) && f.endsWith('.zst.pgp'));
              })();
        const seen = new Map();
        const pending = new Set();
        const poll = () => {
          if (pending.size === 0) return;
          let listing = [];
          if (tool === 'dbcrate') {
            const d = walDir();
            try {
              // format 2: wal/<timeline+log>/<segment>-…; format 1: flat wal/
              listing = d ? readdirSync(d, { recursive: true }).map((f) => String(f).split('/').pop()) : [];
            } catch {
              listing = [];
            }
          }
          const now = Date.now();
          for (const seg of [...pending]) {
            if (stored(seg, listing)) {
              seen.set(seg, now);
              pending.delete(seg);
            }
          }
        };
        const poller = setInterval(poll, 100);
        const commits = [];
        log(
          `RPO ${out.label}: a commit every ${cfg.rpoInterval} s for ${cfg.rpoSeconds} s, archive_timeout=${cfg.archiveTimeout}s`,
        );
        const tEnd = Date.now() + cfg.rpoSeconds * 1000;
        try {
          while (Date.now() < tEnd) {
            const tick = Date.now();
            const { stdout } = await execFileP(
              pgTool('psql'),
              [
                '-X',
                '-q',
                '-At',
                '-v',
                'ON_ERROR_STOP=1',
                '-d',
                c.conninfo('postgres'),
                '-c',
                'INSERT INTO rpo_t (at) VALUES (clock_timestamp())',
                '-c',
                "SELECT pg_walfile_name(pg_current_wal_flush_lsn()) || '|' || pg_current_wal_flush_lsn() || '|' || (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
              ],
              { env: cleanPgEnv() },
            );
            const [seg, lsn, ms] = stdout.trim().split('\n').pop().split('|');
            commits.push({ seg, lsn, t: Number(ms) });
            if (!seen.has(seg)) pending.add(seg);
            await sleep(Math.max(0, tick + cfg.rpoInterval * 1000 - Date.now()));
          }
          const tw = Date.now();
          while (pending.size > 0 && Date.now() - tw < (cfg.archiveTimeout + 60) * 1000) await sleep(100);
        } finally {
          clearInterval(poller);
        }
        poll();
        const delays = commits.map((x) => (seen.has(x.seg) ? (seen.get(x.seg) - x.t) / 1000 : NaN));
        out.commits = commits.length;
        out.detail = commits.map((x) => ({ ...x, storedAt: seen.get(x.seg) ?? null }));
        out.delays = delays;
        out.segments = new Set(commits.map((x) => x.seg)).size;
        out.neverStored = delays.filter((d) => !Number.isFinite(d)).length;
        const ok = delays.filter(Number.isFinite).sort((a, b) => a - b);
        out.median = median(ok);
        out.p90 = ok.length ? ok[Math.min(ok.length - 1, Math.ceil(0.9 * ok.length) - 1)] : NaN;
        out.max = ok.length ? ok[ok.length - 1] : NaN;
        out.min = ok.length ? ok[0] : NaN;
        log(
          `  ${commits.length} commits in ${out.segments} segments: delay median ${out.median.toFixed(2)} s, max ${out.max.toFixed(2)} s${out.neverStored ? `, ${out.neverStored} never stored` : ''}`,
        );
        if (out.neverStored)
          fail(
            'RPO',
            tool,
            new Error(
              `${out.neverStored} of ${commits.length} commits: their segment never appeared in the destination`,
            ),
          );
      } catch (e) {
        fail('RPO', tool, e);
        out.error = true;
      } finally {
        await stopAgent(agent);
        c.stopSync();
        await waitForStrays(pgbr.conf, 15000);
        if (!ctx.keep) rmSync(c.root, { recursive: true, force: true });
      }
    }
    if (!ctx.keep) rmSync(dir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------ run the stages
  const stages = { w1: stageW1, w2: stageW2, b1rt: stageB1RT, rpo: stageRPO };
  for (const s of cfg.stages) {
    const ts = Date.now();
    try {
      await stages[s]();
    } catch (e) {
      fail(s.toUpperCase(), 'harness', e);
    }
    log(`PITR ${s}: ${((Date.now() - ts) / 1000).toFixed(0)} s`);
  }

  res.pgbackrestConf = pgbr.printable(base);
  res.machine.loadEnd = os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
  res.durationSeconds = (Date.now() - t0) / 1000;
  res.verdicts = pitrVerdicts(res);
  res.gnuTime = Boolean(TIME_BIN);
  console.log(`\n${pitrConsole(res)}\n`);
  writeFileSync(join(base, 'pitr-results.json'), JSON.stringify(res, null, 2));
  if (process.env.BENCH_PITR_JSON) writeFileSync(process.env.BENCH_PITR_JSON, JSON.stringify(res, null, 2));
  const failed = res.errors.length > 0;
  if (ctx.writeDoc && !failed) {
    writeDoc(ctx.docPath, pitrMarkdown(res), { begin: PITR_BEGIN, end: PITR_END });
    log(`PITR: wrote ${ctx.docPath}`);
  } else if (ctx.writeDoc) {
    log(
      `PITR: ${res.errors.length} error(s): docs/benchmarks.md not written (results in ${join(base, 'pitr-results.json')} while it exists)`,
    );
  }
  log(`PITR: done in ${(res.durationSeconds / 60).toFixed(1)} min`);
  return { res, failed, missed: res.verdicts.some((v) => v.pass === false) };
}

/** The B1 stock pipeline, run by bash as the postgres user; its inputs come from the environment. */
const STOCK_PIPE = `set -o pipefail
"$PG_BASEBACKUP" -d "$CONNINFO" -D - -Ft -X none --checkpoint=fast |
  zstd -3 -T"$THREADS" |
  gpg --batch --trust-model always --encrypt --recipient-file "$PUB" > "$OUT"`;

/** zstd worker threads dbcrate basebackup uses by default (its own constant when built, else 2). */
function zstdDefaultThreads() {
  try {
    const req = createRequire(import.meta.url);
    const n = req(join(APP, 'dist', 'libs', 'compression', 'src', 'zstd-napi.codec.js')).ZSTD_DEFAULT_THREADS;
    return Number.isInteger(n) && n > 0 ? n : 2;
  } catch {
    return 2;
  }
}

/** The agent's default socket for a data directory: dbcrate's own function when built, else the rule of docs/pitr.md. */
function agentSocketPath(pgdata) {
  try {
    const req = createRequire(import.meta.url);
    return req(join(APP, 'dist', 'libs', 'pitr', 'src', 'agent.protocol.js')).agentSocketPath(pgdata);
  } catch {
    return join(realpathSync(pgdata), 'pg_wal', 'dbcrate-agent.sock');
  }
}

function tail(file, n = 20) {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------- verdicts and reports
const fx = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const ms = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const pct = (xs, p) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return v.length ? v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))] : NaN;
};
const sum = (xs) => xs.filter(Number.isFinite).reduce((a, b) => a + b, 0);

/** Per-round medians of a W1 variant (older JSON without roundMedians: cut calls by round). */
function w1Rounds(x) {
  if (x.roundMedians?.length) return x.roundMedians;
  const n = x.cpu?.length || 1;
  const per = Math.floor(x.calls.length / n);
  return Array.from({ length: n }, (_, i) => median(x.calls.slice(i * per, (i + 1) * per)));
}

const withRange = (value, r) => `${value} (${rangeCell(r)})`;

/** CPU per GiB of the B1 cluster for base backup and recovery (medians; fills res.cpuPerGiB). */
function pitrCpuPerGiB(res) {
  const b = res.stages.b1;
  const rt = res.stages.rt?.runs;
  const bytes = b?.dbBytes;
  const side = (x, label) =>
    x?.walls?.length && !x.broken ? { label, cpu: median(x.cpu), serverCpu: median(x.serverCpu) } : null;
  const rows = [];
  if (b?.runs?.dbcrate) {
    const ours = side(b.runs.dbcrate, `dbcrate basebackup (method: ${b.baseMethod ?? 'default'})`);
    const p = res.config.parallel;
    if (b.runs.stock)
      rows.push(cpuPerGiBRow('base backup', ours, side(b.runs.stock, b1Label('stock', b, p)), bytes));
    if (b.runs.pgbr)
      rows.push(cpuPerGiBRow('base backup', ours, side(b.runs.pgbr, b1Label('pgbr', b, p)), bytes));
  }
  if (rt?.dbcrate && rt?.pgbr)
    rows.push(
      cpuPerGiBRow(
        'recover',
        side(rt.dbcrate, 'dbcrate recover --latest --start'),
        side(rt.pgbr, 'pgbackrest restore + start + replay'),
        bytes,
      ),
    );
  return rows;
}

export function pitrVerdicts(res) {
  const out = [];
  const S = res.stages;
  res.cpuPerGiB = pitrCpuPerGiB(res);
  // a missed ratio target: the peer is 1.00 by definition; say how far dbcrate is from it
  const miss = (v) => (v <= 1.0 ? undefined : `peer = 1.00; dbcrate ${gap(v, 1)} slower`);
  const w1 = S.w1?.variants;
  const ok = (x) => x?.calls?.length > 0;
  const client = res.config.walPush === 'native' ? 'dist/native/dbcrate-wal-push' : 'dbcrate wal-push';
  // one verdict per like-with-like pair: median per call (range over the rounds' medians)
  const w1Pair = (id, label, ours, peer) => {
    if (!ok(ours) || !ok(peer)) return;
    const v = median(ours.calls) / median(peer.calls);
    const r = ratioRange(w1Rounds(ours), w1Rounds(peer));
    out.push({
      id,
      label,
      value: withRange(fx(v), r),
      ratio: v,
      ...r,
      target: '≤ 1.0',
      pass: v <= 1.0,
      floor: miss(v),
    });
  };
  w1Pair(
    'W1a',
    `archive_command per segment, whole backlog ready: ${client} + agent --parallel ${res.config.parallel} / pgBackRest archive-async=y process-max=${res.config.parallel}`,
    w1?.dbcrate,
    w1?.['pgbr-async'],
  );
  if (ok(w1?.dbcrate) && ok(w1?.['pgbr-async'])) {
    const tot = (x) => (x.roundWalls?.length ? median(x.roundWalls) : x.wall / (x.cpu?.length || 1));
    const v = tot(w1.dbcrate) / tot(w1['pgbr-async']);
    const r = w1.dbcrate.roundWalls ? ratioRange(w1.dbcrate.roundWalls, w1['pgbr-async'].roundWalls) : {};
    out.push({
      id: 'W1a-total',
      label: 'W1a total time for the backlog (per round): dbcrate / pgBackRest async',
      value: r.rangeKind ? withRange(fx(v), r) : fx(v),
      ratio: v,
      ...r,
      target: '≤ 1.0',
      pass: v <= 1.0,
      floor: miss(v),
    });
  }
  w1Pair(
    'W1b',
    `archive_command per segment, one segment ready at a time: ${client} + agent / pgBackRest archive-async=n`,
    w1?.['dbcrate-one'],
    w1?.pgbr,
  );
  w1Pair(
    'W1b-noagent',
    'archive_command per segment, no backlog use: dbcrate wal-push --no-agent / pgBackRest archive-async=n (each call pushes its own segment)',
    w1?.['dbcrate-noagent'],
    w1?.pgbr,
  );
  const one = w1?.['dbcrate-one'];
  if (ok(one) && ok(w1?.pgbr) && res.gnuTime !== false) {
    // CPU per 16 MiB segment: the calls' process trees plus the agent, against pgBackRest sync's calls
    const o = (sum(one.cpu) + sum(one.agentCpu)) / one.calls.length;
    const p = sum(w1.pgbr.cpu) / w1.pgbr.calls.length;
    out.push({
      id: 'W1-CPU',
      label: 'CPU per segment, one ready at a time: client + agent vs pgBackRest archive-async=n',
      value: `${fx(o, 3)} vs ${fx(p, 3)} s`,
      ratio: o / p,
      target: 'dbcrate ≤ pgBackRest',
      pass: o <= p,
      floor: o <= p ? undefined : `pgBackRest ${fx(p, 3)} s; dbcrate ${gap(o, p)} more`,
    });
  }
  const w2 = S.w2?.tools;
  if (w2?.dbcrate && w2?.pgbr && !w2.dbcrate.error && !w2.pgbr.error) {
    out.push({
      id: 'W2',
      label: 'max archive backlog under pgbench (.ready segments): dbcrate vs pgBackRest',
      value: `${w2.dbcrate.max} vs ${w2.pgbr.max}`,
      target: 'dbcrate ≤ pgBackRest',
      pass: w2.dbcrate.max <= w2.pgbr.max,
      floor:
        w2.dbcrate.max <= w2.pgbr.max
          ? undefined
          : `pgBackRest ${w2.pgbr.max}; dbcrate ${w2.dbcrate.max - w2.pgbr.max} segments more`,
    });
  }
  const b1 = S.b1?.runs;
  if (b1?.dbcrate?.walls?.length && b1?.pgbr?.walls?.length) {
    const v = median(b1.dbcrate.walls) / median(b1.pgbr.walls);
    const r = ratioRange(b1.dbcrate.walls, b1.pgbr.walls);
    out.push({
      id: 'B1',
      label: 'base backup: dbcrate basebackup / pgbackrest backup --type=full',
      value: withRange(fx(v), r),
      ratio: v,
      ...r,
      target: '≤ 1.0',
      pass: v <= 1.0,
      floor: miss(v),
    });
  }
  const bcpu = res.cpuPerGiB.find((r) => r.op === 'base backup' && r.peer?.startsWith('pgbackrest'));
  if (bcpu && Number.isFinite(bcpu.ratioTotal)) {
    const o = bcpu.oursClient + bcpu.oursServer;
    const p = bcpu.peerClient + bcpu.peerServer;
    out.push({
      id: 'B1-CPU',
      label: 'base backup CPU (client+server) per GiB: dbcrate basebackup vs pgbackrest backup',
      value: `${fx(o)} vs ${fx(p)} s/GiB`,
      target: 'dbcrate ≤ pgBackRest',
      pass: o <= p,
      floor: o <= p ? undefined : `pgBackRest ${fx(p)} s/GiB; dbcrate ${gap(o, p)} more`,
    });
  }
  const rt = S.rt?.runs;
  if (rt?.dbcrate?.walls?.length && rt?.pgbr?.walls?.length) {
    const v = median(rt.dbcrate.walls) / median(rt.pgbr.walls);
    const r = ratioRange(rt.dbcrate.walls, rt.pgbr.walls);
    out.push({
      id: 'RT',
      label: 'recovery: dbcrate recover --latest --start / pgbackrest restore + start + promoted',
      value: withRange(fx(v), r),
      ratio: v,
      ...r,
      target: '≤ 1.0',
      pass: v <= 1.0,
      floor: miss(v),
    });
  }
  const rpo = S.rpo?.tools;
  if (rpo?.dbcrate && Number.isFinite(rpo.dbcrate.median)) {
    out.push({
      id: 'RPO',
      label: `commit → segment stored, archive_timeout=${S.rpo.archiveTimeout}s: dbcrate median / max`,
      value:
        `${fx(rpo.dbcrate.median, 1)} s / ${fx(rpo.dbcrate.max, 1)} s` +
        (rpo.pgbr && Number.isFinite(rpo.pgbr.median)
          ? ` (pgBackRest ${fx(rpo.pgbr.median, 1)} s / ${fx(rpo.pgbr.max, 1)} s)`
          : ''),
      target: 'reported (no target)',
      pass: null,
    });
  }
  return out;
}

function pitrConsole(res) {
  const L = [];
  const S = res.stages;
  if (S.w1) {
    L.push(`W1: ${S.w1.segments} segments, ms per archive_command call (median / p90 / max)`);
    for (const [k, v] of Object.entries(S.w1.variants)) {
      L.push(
        `  ${k.padEnd(16)} ${ms(median(v.calls)).padStart(8)} ${ms(pct(v.calls, 90)).padStart(8)} ${ms(Math.max(...v.calls)).padStart(8)}   ${v.label}`,
      );
    }
  }
  if (S.w2) {
    L.push(
      'W2: backlog (.ready) max (bulk load / pgbench run) / at the end, drain s, segments written/s, archived/s, pgbench tps',
    );
    for (const [k, v] of Object.entries(S.w2.tools)) {
      if (v.error) L.push(`  ${k.padEnd(16)} failed`);
      else
        L.push(
          `  ${k.padEnd(16)} ${v.max} (${v.maxInit} / ${v.maxRun}) / ${v.final}, ${fx(v.drainSeconds, 1)} s, ${fx(v.walPerSecond)}/s, ${fx(v.archivedPerSecond)}/s, ${fx(v.tps, 0)} tps`,
        );
    }
  }
  for (const [name, st] of [
    ['B1', S.b1],
    ['RT', S.rt],
  ]) {
    if (!st) continue;
    L.push(`${name}: wall s (runs → median)`);
    for (const [k, v] of Object.entries(st.runs))
      L.push(
        `  ${k.padEnd(16)} ${v.walls.map((x) => x.toFixed(1)).join(', ')} → ${fx(median(v.walls))}${v.broken ? ' (failed)' : ''}`,
      );
    if (name === 'B1') {
      const r = b1StockRatios(res);
      if (r)
        L.push(
          `  dbcrate ÷ stock ${fx(r.dbcrateOverStock)}, stock ÷ pgbackrest ${fx(r.stockOverPgbr)} (context; B1's target is dbcrate ÷ pgbackrest)`,
        );
    }
  }
  if (S.rpo) {
    L.push('RPO: commit → stored, s (median / p90 / max)');
    for (const [k, v] of Object.entries(S.rpo.tools))
      L.push(`  ${k.padEnd(16)} ${fx(v.median)} / ${fx(v.p90)} / ${fx(v.max)}${v.error ? ' (failed)' : ''}`);
  }
  L.push('');
  for (const v of res.verdicts)
    L.push(
      `${v.id.padEnd(5)} ${v.label.padEnd(92)} ${v.value}  target ${v.target}  ${v.pass === null ? '' : v.pass ? 'PASS' : 'MISS'}${v.floor ? `  (${v.floor})` : ''}`,
    );
  for (const e of res.errors) L.push(`ERROR ${e.stage} (${e.side}): ${e.message}`);
  return L.join('\n');
}

/** B1 table labels. */
function b1Label(k, b, parallel) {
  if (k === 'pgbr') return `pgbackrest backup --type=full (process-max=${parallel})`;
  if (k === 'stock') return `stock: pg_basebackup | zstd -3 -T${b.stockThreads} | gpg`;
  return 'dbcrate basebackup';
}

/** B1 context: dbcrate ÷ the stock pipeline and the stock pipeline ÷ pgBackRest (medians of this run). */
function b1StockRatios(res) {
  const b = res.stages.b1?.runs;
  if (!b?.stock?.walls?.length || b.stock.broken) return null;
  const m = (x) => (x?.walls?.length && !x.broken ? median(x.walls) : NaN);
  return {
    dbcrateOverStock: m(b.dbcrate) / m(b.stock),
    stockOverPgbr: m(b.stock) / m(b.pgbr),
    dbcrateOverPgbr: m(b.dbcrate) / m(b.pgbr),
  };
}

/** The notes under the B1 table about the stock line. */
function b1StockNotes(res) {
  const b = res.stages.b1;
  const r = b1StockRatios(res);
  if (!r) return [];
  const x = b.runs.stock;
  return [
    `"stock" is the pipeline dbcrate basebackup replaces, measured in the same rounds (same CHECKPOINT and \`sync\` before each, ` +
      `rotating order) as the postgres OS user: \`pg_basebackup -D - -Ft -X none --checkpoint=fast | zstd -3 -T${b.stockThreads} | ` +
      'gpg --batch --trust-model always --encrypt --recipient-file <the same dbcrate public key>` into a file in the temporary directory ' +
      `(zstd -T${b.stockThreads}: dbcrate's default zstd worker threads; gpg with an empty throwaway GNUPGHOME). Its CPU client is bash + pg_basebackup + zstd + gpg. ` +
      (x.checked === true
        ? "Checked after the runs (not timed): the last one decrypts with dbcrate's private key and is a tar with backup_label and backup_manifest."
        : x.checked === false
          ? "**The check of its output (decrypt with dbcrate's private key, list the tar) failed**: see the notes from this run."
          : ''),
    `dbcrate basebackup ÷ stock pipeline: **${fx(r.dbcrateOverStock)}** (medians, this run).`,
    `B1's gap is measured against this line: the B1 target still compares dbcrate basebackup with pgbackrest backup ` +
      `(${fx(r.dbcrateOverPgbr)}); the stock pipeline ÷ pgbackrest backup is ${fx(r.stockOverPgbr)} in the same rounds.`,
  ];
}

const cell = (c) => String(c).replace(/\|/g, '\\|').replace(/\n/g, ' ');
const table = (header, rows) =>
  [
    `| ${header.map(cell).join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
const mib = (b) => (Number.isFinite(b) ? `${(b / MiB).toFixed(0)} MiB` : 'n/a');

export function pitrMarkdown(res) {
  const S = res.stages;
  const m = res.machine;
  const v = res.versions;
  const c = res.config;
  const o = [PITR_BEGIN, ''];
  o.push(`## PITR: latest run: ${res.startedAt.slice(0, 10)}`, '');
  o.push(
    "dbcrate's WAL archiving, base backup and recovery against pgBackRest, on throwaway PostgreSQL clusters (bench/pitr.mjs). " +
      'Both tools write to a local directory with zstd level 3 and encryption (pgBackRest: aes-256-cbc with a repository passphrase; ' +
      'dbcrate: OpenPGP to a key from `dbcrate keys generate`), run as the postgres OS user, with the same parallelism ' +
      `(pgBackRest process-max=${c.parallel}, dbcrate agent --parallel ${c.parallel}). Archive settings are given on the postmaster command line, ` +
      'so restored clusters do not inherit them. The ratios compare measurements of this run; nothing is edited by hand.',
    '',
  );
  o.push(
    table(
      ['', ''],
      [
        ['command', `\`${res.commandLine}\``],
        [
          'started / took',
          `${res.startedAt} / ${(res.durationSeconds / 60).toFixed(1)} min (cluster set-up and data generation included)`,
        ],
        [
          'machine',
          `${m.nproc} × ${m.model}, ${m.memGiB.toFixed(1)} GiB RAM, kernel ${m.kernel}${m.os ? `, ${m.os}` : ''}`,
        ],
        ['load average at start / end', `${m.loadStart} / ${m.loadEnd}`],
        ['PostgreSQL server / pgBackRest', `${v.server} / ${v.pgbackrest}`],
        ['dbcrate / node', `${v.dbcrate ?? 'n/a'} / ${v.node}`],
        ...(v.stock ? [['B1 stock pipeline: pg_basebackup / zstd / gpg', v.stock]] : []),
        [
          'sizes (BENCH_PITR_*)',
          `W1 ${c.w1Segments} segments × ${c.w1Rounds} round(s); W2 pgbench -s ${c.w2Scale}, ${c.w2Seconds} s, ${c.w2Clients} clients; ` +
            `B1 pgbench -s ${c.scale}, ${c.runs} run(s); RT ${c.rtRuns} run(s) after ${c.rtWalSeconds} s of pgbench; RPO ${c.rpoSeconds} s, a commit every ${c.rpoInterval} s, archive_timeout=${c.archiveTimeout}s`,
        ],
      ],
    ),
    '',
  );

  o.push(
    'Run: `npm run bench` (both parts, PITR second), `node bench/run.mjs --only pitr` (this part alone, on the current build; ' +
      '`npm run build:dev` first), `--only backup` (the other part). Knobs (default): ' +
      PITR_KNOBS.map(([k, d, what]) => `\`${k}\`${d ? ` (${d})` : ''} ${what}`).join('; ') +
      '; and the shared `BENCH_PEERS_ONLY=1` (pgBackRest only), `BENCH_KEEP=1`, `BENCH_DOC=0`, `BENCH_TMPDIR`. ' +
      'Exit status 3 when a target is missed, 1 when a stage failed (this section is then left as it was). ' +
      'Quick check of the harness (~2 min): `BENCH_PITR_W1_SEGMENTS=8 BENCH_PITR_W1_ROUNDS=1 BENCH_PITR_W2_SCALE=5 ' +
      'BENCH_PITR_W2_SECONDS=10 BENCH_PITR_SCALE=5 BENCH_PITR_RUNS=1 BENCH_PITR_RT_RUNS=1 BENCH_PITR_RT_WAL_SECONDS=5 ' +
      'BENCH_PITR_RPO_SECONDS=12 BENCH_PITR_ARCHIVE_TIMEOUT=4 node bench/run.mjs --only pitr`.',
    '',
  );
  o.push('### PITR targets', '');
  o.push(
    table(
      ['metric', 'check', 'value', 'target', 'result', "peer's own figure (floor) / gap"],
      res.verdicts.map((x) => [
        x.id,
        x.label,
        x.value,
        x.target,
        x.pass === null ? '—' : x.pass ? 'PASS' : '**MISS**',
        x.floor ?? '',
      ]),
    ),
    '',
    `Ratios: median (min–max over the runs). ${RANGE_NOTE} W1's range is over the per-round medians of the calls (with few rounds the median of all calls can lie outside it).`,
    '',
  );
  if (res.cpuPerGiB?.length)
    o.push(
      '### PITR: CPU per GiB of database',
      '',
      table(CPU_PER_GIB_HEADER, res.cpuPerGiB.map(cpuPerGiBCells)),
      '',
      `${CPU_PER_GIB_NOTE} The database is B1's cluster; recovery's server CPU is the restored server's (replay included).`,
      '',
    );

  if (S.w1) {
    const w = S.w1;
    o.push('### W1: archive_command per 16 MiB segment', '');
    o.push(
      `${w.segments} real segments (${w.first} … ${w.last}) written by INSERTs of mixed random/repeated rows on a cluster whose ` +
        `archive_command was /bin/false, so they stayed \`.ready\`; zstd -3 compresses them ${fx(w.plainBytes / w.zstdBytes)}×. ` +
        "With the cluster stopped, the benchmark plays PostgreSQL's archiver: for each segment in order it runs " +
        "`/bin/sh -c '<archive_command>'` in the data directory with %p = pg_wal/<segment> and, on success, renames `.ready` to `.done`. " +
        '"All segments ready": the whole set is `.ready` before the first call (a backlog; the agent and pgBackRest\'s async ' +
        'process can push ahead). "One segment ready at a time": each `.ready` file is created just before its call (no backlog). ' +
        "Each line starts from an empty archive. CPU: user+sys of all the archive_command processes (GNU time), plus the agent's " +
        "own CPU; pgBackRest's async worker detaches and is not counted (n/a).",
      '',
    );
    o.push(
      table(
        [
          'archive_command',
          'calls',
          'median (ms)',
          'p90 (ms)',
          'min (ms)',
          'max (ms)',
          'sum of calls (s)',
          'CPU calls (s)',
          'CPU agent (s)',
          'stored',
        ],
        Object.entries(w.variants).map(([, x]) => [
          x.label,
          String(x.calls.length),
          `**${ms(median(x.calls))}**`,
          ms(pct(x.calls, 90)),
          ms(Math.min(...x.calls)),
          ms(Math.max(...x.calls)),
          fx(sum(x.calls) / 1000),
          fx(sum(x.cpu), 1),
          x.agentCpu.length ? fx(sum(x.agentCpu), 1) : x.label.includes('async') ? 'n/a' : '',
          x.storedBytes ? mib(x.storedBytes) : 'n/a',
        ]),
      ),
      '',
    );
  }

  if (S.w2) {
    const w = S.w2;
    o.push('### W2: archive backlog under a pgbench write load', '');
    o.push(
      `A fresh cluster per tool, one after the other, with ${w.settings ?? 'n/a'}; archiving from the first write: ` +
        `the bulk load \`pgbench -i -I dtGvp -s ${w.scale}\`, then \`pgbench -n -T ${w.seconds} -c ${w.clients} -j 2\`. ` +
        'The backlog is the number of `pg_wal/archive_status/*.ready` files, sampled every second; "at the end" is when pgbench ' +
        'finished, "drain" the time from then until it is 0; archived/s is pg_stat_archiver.archived_count over the whole load ' +
        '(bulk load + run), next to the WAL written per second.',
      '',
    );
    o.push(
      table(
        [
          'archive_command',
          'max backlog',
          'max in bulk load',
          'max in pgbench run',
          'mean backlog',
          'at the end',
          'drain (s)',
          'WAL written (segments)',
          'written/s',
          'archived/s',
          'failures',
          'pgbench -i (s)',
          'pgbench tps',
          'agent CPU (s)',
        ],
        Object.entries(w.tools).map(([, x]) =>
          x.error
            ? [x.label, 'failed', '', '', '', '', '', '', '', '', '', '', '', '']
            : [
                x.label,
                `**${x.max}**`,
                String(x.maxInit),
                String(x.maxRun),
                fx(x.meanDuringLoad, 1),
                String(x.final),
                Number.isFinite(x.drainSeconds) ? fx(x.drainSeconds, 1) : `> ${res.config.w2DrainMax}`,
                fx(x.walSegments, 1),
                fx(x.walPerSecond),
                fx(x.archivedPerSecond),
                String(x.failed),
                fx(x.initSeconds, 1),
                fx(x.tps, 0),
                Number.isFinite(x.agentCpu) ? fx(x.agentCpu, 1) : '',
              ],
        ),
      ),
      '',
    );
  }

  if (S.b1) {
    const b = S.b1;
    o.push('### B1: base backup', '');
    o.push(
      `The same cluster (pgbench -i -s ${b.scale}, ${mib(b.dbBytes)}), archiving every segment to both tools, each in its asynchronous mode ` +
        "(pgBackRest archive-async=y; dbcrate's archive_command client with its agent); runs interleaved with a rotating order, " +
        "a CHECKPOINT and `sync` before each. CPU client: user+sys of the command's process tree (GNU time), plus for dbcrate its agent's CPU during the run " +
        "(pgBackRest's detached async worker is not counted); CPU server: the PostgreSQL server meanwhile, its archive_command processes included.",
      '',
    );
    o.push(
      table(
        [
          'command',
          'runs (s)',
          'median (s)',
          'CPU client (s)',
          'CPU server (s)',
          'peak RSS (node)',
          'stored',
        ],
        Object.entries(b.runs).map(([k, x]) => [
          b1Label(k, b, res.config.parallel),
          x.walls.map((y) => y.toFixed(1)).join(', ') || 'failed',
          `**${fx(median(x.walls))}**`,
          fx(median(x.cpu), 1),
          fx(median(x.serverCpu), 1),
          x.rssMiB?.length ? `${Math.max(...x.rssMiB).toFixed(0)} MiB` : '',
          mib(x.storedBytes),
        ]),
      ),
      '',
    );
    const notes = b1StockNotes(res);
    if (notes.length) {
      for (const n of notes) o.push(`- ${n}`);
      o.push('');
    }
  }

  if (S.rt) {
    const r = S.rt;
    o.push('### RT: restore + replay', '');
    o.push(
      `After the base backups, \`pgbench -n -T ${res.config.rtWalSeconds} -c 4 -j 2\` wrote ${mib(r.walBytes)} of WAL (${fx(r.tps, 0)} tps); ` +
        `the segment was switched and archived to both (last ${r.lastSegment ?? 'n/a'}), then the cluster was stopped. ` +
        'Both recover the newest base backup to the end of the archived WAL and promote; the time runs until the server is out of recovery. ' +
        'Each result is checked against the source (pgbench_history rows, sum of abalance and tbalance) and must be out of recovery. ' +
        '"Promoted" for pgBackRest: the server logged "database system is ready to accept connections" (the end of the startup ' +
        'process; during the replay it accepts read-only connections). CPU server: the recovered server, replay and the ' +
        "restore_command processes it ran included (dbcrate wal-fetch; pgBackRest's async archive-get worker detaches and is not counted).",
      '',
    );
    o.push(
      table(
        ['command', 'runs (s)', 'median (s)', 'CPU client (s)', 'CPU server (s)', 'result checked'],
        Object.entries(r.runs).map(([k, x]) => [
          k === 'pgbr'
            ? `pgbackrest restore (process-max=${res.config.parallel}, archive-get async) + pg_ctl start + wait until promoted`
            : 'dbcrate recover --latest --start',
          x.walls.map((y) => y.toFixed(1)).join(', ') || 'failed',
          `**${fx(median(x.walls))}**`,
          fx(median(x.cpu), 1),
          fx(median(x.serverCpu), 1),
          x.checked.length ? (x.checked.every(Boolean) ? 'same as source' : '**differs**') : 'n/a',
        ]),
      ),
      '',
    );
  }

  if (S.rpo) {
    const r = S.rpo;
    o.push('### RPO: commit → its segment stored', '');
    o.push(
      `A fresh cluster per tool with archive_timeout=${r.archiveTimeout}s; one INSERT (autocommit) every ${r.interval} s for ${r.seconds} s. ` +
        "Each commit's time and segment come from the server right after the commit (`clock_timestamp()`, `pg_walfile_name(pg_current_wal_flush_lsn())`); " +
        'the destination is polled every 100 ms for that segment (dbcrate: `<database-id>/wal/<segment>-*.zst.pgp`; pgBackRest: ' +
        '`archive/<stanza>/15-1/…/<segment>-*.zst`). The delay is first seen − commit time.',
      '',
    );
    o.push(
      table(
        ['archive_command', 'commits', 'segments', 'median (s)', 'p90 (s)', 'min (s)', 'max (s)'],
        Object.entries(r.tools).map(([, x]) =>
          x.error && !x.commits
            ? [x.label, 'failed', '', '', '', '', '']
            : [
                x.label,
                String(x.commits),
                String(x.segments),
                `**${fx(x.median)}**`,
                fx(x.p90),
                fx(x.min),
                fx(x.max),
              ],
        ),
      ),
      '',
    );
  }

  o.push('### PITR commands as run', '');
  o.push('`$TMP` is the temporary directory; `node bin/dbcrate.js` is `dbcrate`.', '');
  o.push('```sh');
  for (const [k, x] of Object.entries(res.commands)) o.push(`# ${k}`, x);
  o.push('```', '');
  o.push(
    'pgBackRest configuration (`--config=$TMP/pgbackrest/pgbackrest.conf`; one repository, one stanza per cluster; ' +
      "W1's first line adds `--no-archive-async` on its command line):",
    '',
  );
  o.push('```ini', res.pgbackrestConf.trimEnd(), '```', '');
  if (res.dbcrateYaml) {
    o.push('dbcrate configuration (`--config`, one per stage):', '');
    o.push('```yaml', res.dbcrateYaml.trimEnd(), '```', '');
  }
  const notes = [...res.notes];
  if (!res.gnuTime) notes.push('/usr/bin/time is missing: no CPU totals.');
  if (notes.length) {
    o.push('### PITR notes from this run', '');
    for (const n of notes) o.push(`- ${n}`);
    o.push('');
  }
  o.push(PITR_END);
  return o.join('\n');
}
