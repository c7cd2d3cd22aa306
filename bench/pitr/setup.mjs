// The PITR part's set-up: its temp directory (and its cleanup on any exit path), the dbcrate
// under test, what that dbcrate can do, versions and keys; and the helpers every stage uses
// (timed commands, failures, dbcrate configuration, the agent). setupPitr() returns them as
// one object, `pitr`, that runPitr() hands to each stage.
import { execFile, execFileSync } from 'node:child_process';
import {
  chownSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pgTool } from '../lib/cluster.mjs';
import { measure } from '../lib/measure.mjs';
import { PgBackRest } from '../lib/pgbackrest.mjs';
import {
  freshDirPg,
  killEverythingSync,
  mkdirPg,
  pgEnv,
  pgSpawnOpts,
  pgUser,
  procCpuSeconds,
  runPg,
  sleep,
  startDaemon,
  stopDaemon,
} from '../lib/wal.mjs';
import { NODE, REPO, REPO_CLI, REPO_NATIVE, flag, pitrConfig } from './config.mjs';

export const execFileP = promisify(execFile);

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

export class StageError extends Error {}

/**
 * Everything the stages share. ctx: { log, machine(), commandLine, peersOnly, keep, writeDoc, tmp, docPath, jsonPath }.
 * Returns pitr: { ctx, log, cfg, t0, res, base, uid, gid, logs, envPg, pgbr, app, cli, native, dbc, pub, priv,
 * gpgHomes, short, has, missing, dbcrateConfig, walPushCommand, clientLabel, startAgent, stopAgent, go, fail }.
 */
export async function setupPitr(ctx) {
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
  const pitr = {
    ctx,
    log,
    cfg,
    t0,
    res,
    base,
    uid,
    gid,
    logs,
    envPg,
    pgbr,
    // The dbcrate under test (app: where its bin/ and dist/ are). A copy of bin/ and dist/
    // taken below (BENCH_PITR_SNAPSHOT, default on), so that a rebuild while the benchmark
    // runs cannot mix two builds.
    app: REPO,
    cli: REPO_CLI,
    native: REPO_NATIVE,
    dbc: null,
    pub: null,
    priv: null,
    /** Throwaway GNUPGHOMEs of this run whose gpg-agent is still to be stopped (B1's stock pipeline). */
    gpgHomes: [],
  };
  const short = (pitr.short = (text) =>
    text
      .replaceAll(NODE, 'node')
      .replaceAll(pitr.app + '/', '')
      .replaceAll(REPO + '/', '')
      .replaceAll(base, '$TMP'));

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
    pitr.app = app;
    pitr.cli = join(app, 'bin', 'dbcrate.js');
    pitr.native = join(app, 'dist', 'native', 'dbcrate-wal-push');
    log(
      `PITR: measuring a copy of bin/ and dist/ (${short(app)}; node_modules linked), so that a rebuild during the run cannot interfere`,
    );
    res.notes.push(
      'dbcrate ran from a copy of bin/ and dist/ taken at the start of the run (node_modules linked); ' +
        "the native client's fallback without an agent execs the checkout's bin/dbcrate.js (baked in at build time).",
    );
  }
  const CLI = pitr.cli;

  // ------------------------------------------------------------ what dbcrate can do right now
  const dbc = (pitr.dbc = { available: {}, problems: [], help: {} });
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
  pitr.has = (...cmds) => !ctx.peersOnly && cmds.every((c) => dbc.available[c]);
  pitr.missing = (...cmds) => cmds.filter((c) => !dbc.available[c]).join(', ');
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
  if (!ctx.peersOnly && Object.values(dbc.available).some(Boolean)) {
    try {
      await runPg([NODE, CLI, 'keys', 'generate', '--name', 'bench-pitr', '--out', keys], {
        env: envPg,
        cwd: REPO,
      });
      pitr.pub = readdirSync(keys).find((f) => f.endsWith('.pub.asc'));
      pitr.priv = readdirSync(keys).find((f) => f.endsWith('.key.asc'));
      if (!pitr.pub || !pitr.priv)
        throw new Error(`wrote ${readdirSync(keys).join(', ')} (expected *.pub.asc, *.key.asc)`);
      pitr.pub = join(keys, pitr.pub);
      pitr.priv = join(keys, pitr.priv);
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

  if (cfg.walPush === 'native' && !ctx.peersOnly && !existsSync(pitr.native))
    throw new Error(
      `BENCH_PITR_WAL_PUSH=native but ${pitr.native} is not built (npm run build:dev builds it)`,
    );
  return Object.assign(pitr, stageHelpers(pitr));
}

/** The helpers of the stages, over the shared object (read when called: keys, the dbcrate under test). */
function stageHelpers(pitr) {
  const { log, cfg, res, uid, gid, logs, envPg, short } = pitr;

  /** The dbcrate --config file of a stage: destination and recipient (the agent socket is the default one). */
  const dbcrateConfig = (dir) => {
    const dest = join(dir, 'dest');
    freshDirPg(dest);
    const yaml = join(dir, 'dbcrate.yaml');
    const text = [
      `to: file://${dest}`,
      'recipient:',
      `  - ${pitr.pub}`,
      `signing-key: ${envPg.DBCRATE_SIGNING_KEY}`,
      '',
    ].join('\n');
    writeFileSync(yaml, text, { mode: 0o644 });
    chownSync(yaml, uid, gid);
    res.dbcrateYaml ??= short(text);
    return { dest, yaml, dir };
  };
  /** archive_command for dbcrate: `client` native (the C client) or node (`dbcrate wal-push`). */
  const walPushCommand = (yaml, { client = cfg.walPush, noAgent = false } = {}) =>
    client === 'native'
      ? `${pitr.native} %p --config ${yaml}${noAgent ? ' --no-agent' : ''}`
      : `${NODE} ${pitr.cli} wal-push %p --config ${yaml}${noAgent ? ' --no-agent' : ''}`;
  const clientLabel = (client = cfg.walPush) =>
    client === 'native' ? 'dist/native/dbcrate-wal-push' : 'dbcrate wal-push';

  /** dbcrate agent for a data directory; resolves once its socket exists. */
  const startAgent = async (stageKey, data, dc) => {
    const socket = agentSocketPath(pitr.app, data);
    const argv = [
      NODE,
      pitr.cli,
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
  return { dbcrateConfig, walPushCommand, clientLabel, startAgent, stopAgent, go, fail };
}

/** The agent's default socket for a data directory: dbcrate's own function when built, else the rule of docs/pitr.md. */
function agentSocketPath(app, pgdata) {
  try {
    const req = createRequire(import.meta.url);
    return req(join(app, 'dist', 'libs', 'pitr', 'src', 'agent.protocol.js')).agentSocketPath(pgdata);
  } catch {
    return join(realpathSync(pgdata), 'pg_wal', 'dbcrate-agent.sock');
  }
}

export function tail(file, n = 20) {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}
