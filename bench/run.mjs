#!/usr/bin/env node
// npm run bench: dbcrate backup/restore against pg_dump, pg_dump | zstd | gpg and
// pg_restore, in one run, on one throwaway PostgreSQL 15 cluster; then the PITR benchmarks
// against pgBackRest (bench/pitr.mjs). See docs/benchmarks.md.
//
// Usage: node bench/run.mjs [--only backup|pitr|walscale|walseal]   (default: backup and pitr, backup/restore first;
// walscale, archive_command time against the archive's size, runs only when asked for: bench/wal-scale.mjs;
// walseal, a WAL segment's CPU step by step, runs after the PITR part and alone with --only walseal)
//
// Environment: BENCH_SCALE_GB (1), BENCH_RUNS (5), BENCH_RUNS_4X (1), BENCH_4X (1),
// BENCH_PROFILE (1), BENCH_STAGES (1), BENCH_PEERS_ONLY (0), BENCH_TMPDIR (os.tmpdir()), BENCH_KEEP (0),
// BENCH_DOC (1), BENCH_PG_BIN (/usr/lib/postgresql/15/bin).
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Cluster, cleanPgEnv, pgTool, run } from './lib/cluster.mjs';
import { buildDataset } from './lib/dataset.mjs';
import { TIME_BIN, killAllRunning, measure } from './lib/measure.mjs';
import { summarizeProfile } from './lib/profile.mjs';
import { consoleReport, markdownSection, summarize, verdicts, writeDoc } from './lib/report.mjs';
import { pitrCleanupSync, runPitr } from './pitr.mjs';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(REPO, 'bin', 'dbcrate.js');
const DOC = process.env.BENCH_DOC_FILE || join(REPO, 'docs', 'benchmarks.md'); // BENCH_DOC_FILE: test the harness on a copy
const GB = 1024 ** 3;
const GPG_ENC = 'gpg --batch --encrypt --recipient-file "$PUB" --trust-model always';

const num = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${v}: expected a positive number`);
  return n;
};
const flag = (name, dflt) => {
  const v = process.env[name];
  return v === undefined || v === '' ? dflt : !['0', 'false', 'no', 'off'].includes(v.toLowerCase());
};

/** --only backup | --only pitr (or --only=…); default: everything. */
const ONLY = (() => {
  const argv = process.argv.slice(2);
  let only = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--only') only = argv[++i];
    else if (a.startsWith('--only=')) only = a.slice(7);
    else if (a === '-h' || a === '--help') {
      console.log(
        'usage: node bench/run.mjs [--only backup|pitr|walscale|walseal]   (default: backup and pitr; environment knobs in docs/benchmarks.md)',
      );
      process.exit(0);
    } else {
      console.error(`bench: unknown argument ${a} (usage: node bench/run.mjs [--only backup|pitr])`);
      process.exit(2);
    }
  }
  if (only !== null && !['backup', 'pitr', 'walscale', 'walseal'].includes(only)) {
    console.error(`bench: --only ${only}: expected backup, pitr, walscale or walseal`);
    process.exit(2);
  }
  return only;
})();

const config = {
  scaleGB: num('BENCH_SCALE_GB', 1),
  runs: Math.round(num('BENCH_RUNS', 5)),
  runs4: Math.round(num('BENCH_RUNS_4X', 1)),
  with4x: flag('BENCH_4X', true),
  profile: flag('BENCH_PROFILE', true),
  stages: flag('BENCH_STAGES', true),
  peersOnly: flag('BENCH_PEERS_ONLY', false),
  keep: flag('BENCH_KEEP', false),
  writeDoc: flag('BENCH_DOC', true),
  tmp: process.env.BENCH_TMPDIR || os.tmpdir(),
};

const t0 = Date.now();
const log = (msg) => console.log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(5)}s] ${msg}`);

// ---------------------------------------------------------------- cleanup, on every exit path
let base = null;
let cluster = null;
let cleaned = false;
/** The backup/restore part's cluster and temp directory. */
function cleanupMainSync() {
  if (cleaned) return;
  cleaned = true;
  killAllRunning('SIGKILL');
  cluster?.stopSync();
  if (base && !config.keep) rmSync(base, { recursive: true, force: true });
  else if (base) console.log(`kept ${base} (BENCH_KEEP)`);
}
function cleanupSync() {
  cleanupMainSync();
  killAllRunning('SIGKILL');
  pitrCleanupSync();
}
for (const [sig, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
]) {
  process.on(sig, () => {
    console.error(`\nbench: ${sig}: stopping the cluster and removing ${base ?? 'temp files'}`);
    cleanupSync();
    process.exit(code);
  });
}
process.on('exit', cleanupSync);

// ---------------------------------------------------------------- helpers
const sh = (script) => ['bash', '-c', `set -o pipefail; ${script}`];
const firstLine = (s) => s.split('\n').find((l) => l.trim()) ?? '';
function version(cmd, args = ['--version']) {
  try {
    return firstLine(execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })).trim();
  } catch {
    return 'n/a';
  }
}
const pkgVersion = (name) => {
  try {
    return JSON.parse(readFileSync(join(REPO, 'node_modules', name, 'package.json'), 'utf8')).version;
  } catch {
    return undefined;
  }
};
function machine() {
  const cpu = readFileSync('/proc/cpuinfo', 'utf8');
  const osr = existsSync('/etc/os-release') ? readFileSync('/etc/os-release', 'utf8') : '';
  return {
    nproc: Number(execFileSync('nproc', { encoding: 'utf8' }).trim()),
    model: /^model name\s*:\s*(.*)$/m.exec(cpu)?.[1]?.trim() ?? 'unknown',
    memGiB: os.totalmem() / GB,
    kernel: os.release(),
    os: /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(osr)?.[1],
    loadStart: os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' '),
  };
}
const rotate = (xs, i) => xs.slice(i % xs.length).concat(xs.slice(0, i % xs.length));
const sync = () => execFileSync('sync');
function findFiles(dir, suffix) {
  const out = [];
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...findFiles(p, suffix));
    else if (e.name.endsWith(suffix)) out.push(p);
  }
  return out;
}

async function main() {
  if (config.scaleGB < 0.01) throw new Error('BENCH_SCALE_GB must be at least 0.01');
  for (const t of ['pg_dump', 'pg_restore', 'pgbench', 'initdb', 'pg_ctl', 'psql']) {
    if (!existsSync(pgTool(t)))
      throw new Error(`${pgTool(t)} not found (PostgreSQL 15 client/server packages)`);
  }
  for (const t of ['zstd', 'gpg']) {
    if (version(t) === 'n/a') throw new Error(`${t} not found on PATH`);
  }
  if (!config.peersOnly && !existsSync(join(REPO, 'dist', 'services', 'cli', 'src', 'main.js'))) {
    throw new Error(
      'dbcrate is not built: run `npm run build` (npm run bench does), or set BENCH_PEERS_ONLY=1',
    );
  }

  const res = {
    startedAt: new Date().toISOString(),
    config,
    commandLine: commandLine(),
    machine: machine(),
    datasets: {},
    runs: {},
    notes: [],
    commands: {},
  };
  /** The command line as run, with the temp directory and conninfo abbreviated. */
  const describe = (argv, env) => {
    let text = argv[0] === 'bash' ? argv[2].replace(/^set -o pipefail; /, '') : argv.join(' ');
    if (argv[0] === 'bash') {
      for (const v of ['PG_DUMP', 'PG_RESTORE', 'PUB', 'OUT', 'DUMP', 'IN']) {
        if (env[v]) text = text.replaceAll(`"$${v}"`, env[v]);
      }
    }
    return text
      .replaceAll(process.execPath, 'node')
      .replaceAll(REPO + '/', '')
      .replaceAll(base, '$TMP');
  };
  const add = (k, m) => (res.runs[k] ??= []).push(m);

  mkdirSync(config.tmp, { recursive: true });
  base = await mkdtemp(join(config.tmp, 'dbcrate-bench-'));
  chmodSync(base, 0o755); // the postgres user must reach its cluster directory below
  const logs = join(base, 'logs');
  const keys = join(base, 'keys');
  const gnupg = join(base, 'gnupg');
  for (const d of [logs, keys, gnupg]) mkdirSync(d, { recursive: true, mode: 0o700 });
  log(`temp directory ${base} (removed at the end; BENCH_KEEP=1 keeps it)`);
  log(
    `config ${JSON.stringify({ ...config, tmp: undefined })}; GNU time: ${TIME_BIN ? 'yes' : 'no (no CPU totals)'}`,
  );

  const envPeers = cleanPgEnv({ GNUPGHOME: gnupg });
  const envCli = cleanPgEnv({ GNUPGHOME: gnupg });
  let seq = 0;
  const go = async (key, argv, opts = {}) => {
    const n = ++seq;
    const server0 = cluster?.cpuSeconds() ?? NaN;
    const m = await measure(argv, {
      env: opts.env ?? envPeers,
      stderrFile: join(logs, `${String(n).padStart(3, '0')}-${key}.log`),
      timeFile: join(logs, `${String(n).padStart(3, '0')}-${key}.time`),
      stdout: opts.stdout,
      sample: opts.sample,
      cwd: REPO,
    });
    // The server's CPU for this command (the backend serving pg_dump / pg_restore, plus
    // checkpointer and friends); the client side is m.time.cpu.
    m.serverCpu = (cluster?.cpuSeconds() ?? NaN) - server0;
    res.commands[key] ??= describe(argv, opts.env ?? envPeers);
    if (m.code !== 0) {
      const tail = readFileSync(join(logs, `${String(n).padStart(3, '0')}-${key}.log`), 'utf8')
        .trim()
        .split('\n')
        .slice(-15)
        .join('\n');
      throw new Error(`${key}: ${argv.join(' ')} exited ${m.code ?? m.signal}:\n${tail}`);
    }
    log(
      `  ${key.padEnd(6)} ${m.wall.toFixed(2)} s${m.proc ? `, node peak RSS ${(m.proc.hwmKiB / 1024).toFixed(0)} MiB` : ''}`,
    );
    return m;
  };
  const dbcrate = (...args) => [process.execPath, CLI, ...args];

  // ------------------------------------------------------------ keys
  let pub;
  let priv = null;
  if (config.peersOnly) {
    log('keys: BENCH_PEERS_ONLY, using a gpg-generated Curve25519 key');
    await run(
      [
        'gpg',
        '--batch',
        '--passphrase',
        '',
        '--quick-gen-key',
        'bench <bench@localhost>',
        'future-default',
        'default',
        'never',
      ],
      {
        env: envPeers,
      },
    );
    pub = join(keys, 'bench.pub.asc');
    const { stdout } = await run(['gpg', '--batch', '--armor', '--export', 'bench@localhost'], {
      env: envPeers,
    });
    writeFileSync(pub, stdout);
  } else {
    log('keys: dbcrate keys generate');
    await run(dbcrate('keys', 'generate', '--name', 'bench', '--out', keys), { env: envCli, cwd: REPO });
    pub = join(keys, 'bench.pub.asc');
    priv = join(keys, 'bench.key.asc');
    // Backups are signed (docs/signing.md): measured with signing on, as they run.
    await run(dbcrate('keys', 'generate-signing', '--name', 'bench-host', '--out', keys), {
      env: envCli,
      cwd: REPO,
    });
    envCli.DBCRATE_SIGNING_KEY = join(keys, 'bench-host.sign.key.asc');
    envCli.DBCRATE_TRUST = join(keys, 'bench-host.sign.pub.asc');
    await run(['gpg', '--batch', '--import', priv], { env: envPeers });
  }
  res.gpgInfo = await gpgInfo(pub, envPeers);
  log(`gpg with this recipient: ${res.gpgInfo}`);

  // ------------------------------------------------------------ cluster and 1× dataset
  cluster = new Cluster(join(base, 'pg'));
  await cluster.start();
  log(`PostgreSQL 15 cluster on 127.0.0.1:${cluster.port}`);
  await cluster.setLoading(true);
  log(`building bench_1x (≥ ${config.scaleGB} GB)`);
  const d1 = await buildDataset(cluster, 'bench_1x', config.scaleGB * GB, log);
  res.datasets.x1 = d1;
  await cluster.setLoading(false);
  sync();

  res.versions = {
    pgDump: version(pgTool('pg_dump')).replace(/^pg_dump \(PostgreSQL\) /, ''),
    pgRestore: version(pgTool('pg_restore')).replace(/^pg_restore \(PostgreSQL\) /, ''),
    server: await cluster.psql('postgres', 'SHOW server_version'),
    zstd: /v\d+\.\d+\.\d+/.exec(version('zstd', ['-V']))?.[0] ?? 'n/a',
    gpg: version('gpg'),
    node: process.version,
    dbcrate: config.peersOnly ? undefined : version(process.execPath, [CLI, '--version']),
    openpgp: pkgVersion('openpgp'),
    zstdNapi: pkgVersion('zstd-napi'),
  };

  const conn1 = cluster.conninfo('bench_1x');
  const plain = join(base, 'plain.dump');
  const bOut = join(base, 'b.out.pgp');
  const store = (name) => join(base, 'store', name);

  // ------------------------------------------------------------ P: the local plain dump (and cache warm-up)
  log('P: pg_dump -Fc -Z0 to a local file (input of E; warms the cache)');
  add(
    'P',
    await go('P', sh(`"$PG_DUMP" -Fc -Z0 -d "$CONN" -f "$DUMP"`), {
      env: { ...envPeers, PG_DUMP: pgTool('pg_dump'), CONN: conn1, DUMP: plain },
    }),
  );
  d1.plainDumpBytes = statSync(plain).size;
  sync();

  // ------------------------------------------------------------ backups: A, B, C interleaved
  const backupCmds = {
    A: () =>
      go('A', sh(`"$PG_DUMP" -Fc -Z0 -d "$CONN" > /dev/null`), {
        env: { ...envPeers, PG_DUMP: pgTool('pg_dump'), CONN: conn1 },
      }),
    B: () =>
      go(
        'B',
        sh(
          `"$PG_DUMP" -Fc -Z0 -d "$CONN" | zstd -q -T2 -3 | gpg --batch --encrypt --recipient-file "$PUB" --trust-model always > "$OUT"`,
        ),
        { env: { ...envPeers, PG_DUMP: pgTool('pg_dump'), CONN: conn1, PUB: pub, OUT: bOut } },
      ),
    C: (i) =>
      go(
        'C',
        dbcrate(
          'backup',
          '--db',
          cluster.url('bench_1x'),
          '--to',
          `file://${store(`c${i}`)}`,
          '--recipient',
          pub,
        ),
        {
          env: envCli,
          stdout: 'capture',
          sample: true,
        },
      ),
  };
  const backupOrder = config.peersOnly ? ['A', 'B'] : ['A', 'B', 'C'];
  let snapshot = null;
  for (let i = 0; i < config.runs; i++) {
    log(`backup round ${i + 1}/${config.runs}: ${rotate(backupOrder, i).join(', ')}`);
    for (const k of rotate(backupOrder, i)) {
      const m = await backupCmds[k](i);
      add(k, m);
      if (k === 'C') {
        if (i === 0) snapshot = m.stdout.trim().split('\n').pop();
        else rmSync(store(`c${i}`), { recursive: true, force: true });
      }
      sync();
    }
  }
  d1.encryptedBytes = statSync(bOut).size;
  if (!config.peersOnly) {
    const objs = findFiles(store('c0'), '.pgp');
    if (objs.length) res.dbcrateStoredBytes = statSync(objs[0]).size;
    const manifests = findFiles(store('c0'), '.manifest.json');
    if (manifests.length) {
      const man = JSON.parse(readFileSync(manifests[0], 'utf8'));
      const c = man.compression ?? {};
      res.versions.codec = [c.implementation ?? c.codec, c.level !== undefined ? `level ${c.level}` : null]
        .filter(Boolean)
        .join(', ');
    }
    log(`snapshot for the restores: ${snapshot}`);
  }

  // ------------------------------------------------------------ restores: E, D, F interleaved
  const counts = async (db) =>
    cluster.psql(
      db,
      // row counts and a hash sum over the random columns: a restore that lost or changed rows shows
      "SELECT (SELECT count(*) || '/' || sum(hashtext(session || payload)::bigint) FROM bench_events) || '/' || " +
        "(SELECT count(*) || '/' || sum(aid) FROM pgbench_accounts)",
    );
  const expected = await counts('bench_1x');
  const restoreInto = async (key, db, argv, opts) => {
    await cluster.createdb(db);
    const m = await go(key, argv, opts);
    const got = await counts(db);
    if (got !== expected)
      throw new Error(`${key}: restored ${db} has ${got} (rows/hash/rows/sum), the source ${expected}`);
    await cluster.dropdb(db);
    await cluster.psql('postgres', 'CHECKPOINT');
    sync();
    return m;
  };
  const restoreCmds = {
    E: (i) => {
      const db = `restore_e${i}`;
      return restoreInto('E', db, sh(`"$PG_RESTORE" -d "$CONN" "$DUMP"`), {
        env: { ...envPeers, PG_RESTORE: pgTool('pg_restore'), CONN: cluster.conninfo(db), DUMP: plain },
      });
    },
    D: (i) => {
      const db = `restore_d${i}`;
      return restoreInto(
        'D',
        db,
        dbcrate(
          'restore',
          snapshot,
          '--from',
          `file://${store('c0')}`,
          '--key',
          priv,
          '--to',
          cluster.url(db),
        ),
        {
          env: envCli,
          stdout: 'capture',
          sample: true,
        },
      );
    },
    F: (i) => {
      const db = `restore_f${i}`;
      return restoreInto(
        'F',
        db,
        sh(
          `gpg --batch --quiet --decrypt "$IN" | zstd -q -d | "$PG_RESTORE" --single-transaction --exit-on-error -d "$CONN"`,
        ),
        { env: { ...envPeers, PG_RESTORE: pgTool('pg_restore'), CONN: cluster.conninfo(db), IN: bOut } },
      );
    },
  };
  const restoreOrder = config.peersOnly ? ['E', 'F'] : ['E', 'D', 'F'];
  for (let i = 0; i < config.runs; i++) {
    log(`restore round ${i + 1}/${config.runs}: ${rotate(restoreOrder, i).join(', ')}`);
    for (const k of rotate(restoreOrder, i)) add(k, await restoreCmds[k](i));
  }

  // ------------------------------------------------------------ stages in isolation: which one limits?
  if (config.stages && !config.peersOnly) {
    const zst = join(base, 'plain.dump.zst');
    await run(['zstd', '-q', '-T2', '-3', '-f', '-o', zst, plain]);
    const obj = findFiles(store('c0'), '.pgp')[0];
    const stage = (name, input, key) => [
      process.execPath,
      join(REPO, 'bench', 'stages.mjs'),
      name,
      input,
      ...(key ? [key] : []),
    ];
    const peer = (script, vars) => [sh(script), { env: { ...envPeers, ...vars } }];
    const pairs = [
      ['zstd', stage('zstd', plain), peer('zstd -q -T2 -3 -c "$IN" > /dev/null', { IN: plain })],
      ['openpgp', stage('openpgp', zst, pub), peer(GPG_ENC + ' < "$IN" > /dev/null', { IN: zst, PUB: pub })],
      [
        'chain',
        stage('chain', plain, pub),
        peer('zstd -q -T2 -3 -c "$IN" | ' + GPG_ENC + ' > /dev/null', { IN: plain, PUB: pub }),
      ],
      [
        'decrypt',
        stage('decrypt', obj, priv),
        peer('gpg --batch --quiet --decrypt "$IN" > /dev/null', { IN: obj }),
      ],
      ['unzstd', stage('unzstd', zst), peer('zstd -q -d -c "$IN" > /dev/null', { IN: zst })],
      [
        'restore-chain',
        stage('restore-chain', obj, priv),
        peer('gpg --batch --quiet --decrypt "$IN" | zstd -q -d > /dev/null', { IN: obj }),
      ],
    ];
    res.stageInputs = { plain: statSync(plain).size, zst: statSync(zst).size, object: statSync(obj).size };
    for (let i = 0; i < config.runs; i++) {
      log(
        `stages round ${i + 1}/${config.runs} (dbcrate's stages alone, file → /dev/null, next to the CLI tool)`,
      );
      for (const [name, ours, [theirs, opts]] of pairs) {
        const m = await go(`S:${name}`, ours, { env: envCli, sample: true, stdout: 'capture' });
        m.inner = Number(/ (\d+\.\d+)\s*$/.exec(m.stdout)?.[1]); // the pipeline alone, without node start-up
        add(`S:${name}`, m);
        add(`T:${name}`, await go(`T:${name}`, theirs, opts));
      }
    }
    rmSync(zst, { force: true });
  }

  // ------------------------------------------------------------ CPU profile of one backup (not a timing)
  if (config.profile && !config.peersOnly) {
    log('profile: one dbcrate backup under node --cpu-prof');
    const profDir = join(base, 'prof');
    const m = await go(
      'Cprof',
      [
        process.execPath,
        '--cpu-prof',
        `--cpu-prof-dir=${profDir}`,
        CLI,
        'backup',
        '--db',
        cluster.url('bench_1x'),
        '--to',
        `file://${store('prof')}`,
        '--recipient',
        pub,
      ],
      { env: envCli, stdout: 'capture', sample: true },
    );
    add('Cprof', m);
    const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
    if (files.length) res.profile = { wall: m.wall, ...summarizeProfile(join(profDir, files[0])) };
    rmSync(store('prof'), { recursive: true, force: true });
  }

  // ------------------------------------------------------------ 4×: memory must not grow with size
  if (config.with4x) {
    rmSync(plain, { force: true });
    rmSync(store('c0'), { recursive: true, force: true });
    await cluster.dropdb('bench_1x');
    await cluster.setLoading(true);
    log(`building bench_4x (≥ ${4 * config.scaleGB} GB)`);
    const d4 = await buildDataset(cluster, 'bench_4x', 4 * config.scaleGB * GB, log);
    res.datasets.x4 = d4;
    await cluster.setLoading(false);
    sync();
    const conn4 = cluster.conninfo('bench_4x');
    const expected4 = await counts('bench_4x');
    for (let i = 0; i < config.runs4; i++) {
      log(`4× round ${i + 1}/${config.runs4}`);
      add(
        'A4',
        await go('A4', sh(`"$PG_DUMP" -Fc -Z0 -d "$CONN" > /dev/null`), {
          env: { ...envPeers, PG_DUMP: pgTool('pg_dump'), CONN: conn4 },
        }),
      );
      sync();
      if (config.peersOnly) continue;
      const c = await go(
        'C4',
        dbcrate(
          'backup',
          '--db',
          cluster.url('bench_4x'),
          '--to',
          `file://${store(`c4-${i}`)}`,
          '--recipient',
          pub,
        ),
        {
          env: envCli,
          stdout: 'capture',
          sample: true,
        },
      );
      add('C4', c);
      const snap4 = c.stdout.trim().split('\n').pop();
      const man4 = findFiles(store(`c4-${i}`), '.manifest.json')[0];
      if (man4) d4.plainDumpBytes = JSON.parse(readFileSync(man4, 'utf8')).object?.plaintextSize;
      sync();
      const db = `restore_d4_${i}`;
      await cluster.createdb(db);
      const m = await go(
        'D4',
        dbcrate(
          'restore',
          snap4,
          '--from',
          `file://${store(`c4-${i}`)}`,
          '--key',
          priv,
          '--to',
          cluster.url(db),
        ),
        {
          env: envCli,
          stdout: 'capture',
          sample: true,
        },
      );
      const got = await counts(db);
      if (got !== expected4) throw new Error(`D4: restored ${db} has ${got}, the source ${expected4}`);
      add('D4', m);
      await cluster.dropdb(db);
      await cluster.psql('postgres', 'CHECKPOINT');
      rmSync(store(`c4-${i}`), { recursive: true, force: true });
      sync();
    }
  }

  // ------------------------------------------------------------ report
  res.machine.loadEnd = os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
  res.durationSeconds = (Date.now() - t0) / 1000;
  res.summary = Object.fromEntries(Object.entries(res.runs).map(([k, v]) => [k, summarize(v)]));
  res.verdicts = verdicts(res);
  if (config.peersOnly) res.notes.push('BENCH_PEERS_ONLY=1: dbcrate was not measured (harness test run).');
  if (!TIME_BIN) res.notes.push('/usr/bin/time is missing: no CPU totals.');
  console.log(`\n${consoleReport(res)}\n`);
  writeFileSync(join(base, 'results.json'), JSON.stringify(res, null, 2));
  if (config.writeDoc) {
    writeDoc(DOC, markdownSection(res));
    log(`wrote ${DOC}`);
  }
  if (process.env.BENCH_JSON) writeFileSync(process.env.BENCH_JSON, JSON.stringify(res, null, 2));
  log(`done in ${(res.durationSeconds / 60).toFixed(1)} min`);
  if (res.verdicts.some((v) => !v.pass)) process.exitCode = 3;
}

/** The command as a user reruns it, with the BENCH_* variables that were set. */
function commandLine() {
  const vars = Object.entries(process.env)
    .filter(([k]) => k.startsWith('BENCH_'))
    .sort()
    .map(([k, v]) => `${k}=${v}`);
  const args = process.argv.slice(2);
  const cmd =
    process.env.npm_lifecycle_event === 'bench'
      ? `npm run bench${args.length ? ` -- ${args.join(' ')}` : ''}`
      : ['node bench/run.mjs', ...args].join(' ');
  return [...vars, cmd].join(' ');
}

/** Which compression and cipher gpg picks for this recipient (from a small sample). */
async function gpgInfo(pub, env) {
  try {
    const sample = join(base, 'gpg-sample');
    writeFileSync(sample, 'x'.repeat(4096));
    await run(
      [
        'gpg',
        '--batch',
        '--yes',
        '--encrypt',
        '--recipient-file',
        pub,
        '--trust-model',
        'always',
        '-o',
        `${sample}.pgp`,
        sample,
      ],
      { env },
    );
    const { stdout } = await run(['gpg', '--batch', '--status-fd', '1', '--list-packets', `${sample}.pgp`], {
      env,
    });
    const info = /DECRYPTION_INFO (\d+) (\d+)/.exec(stdout);
    const algos = { 7: 'AES128', 8: 'AES192', 9: 'AES256' };
    const comp = /:compressed packet: algo=(\d+)/.exec(stdout);
    const compNames = { 1: 'ZIP', 2: 'ZLIB', 3: 'BZIP2' };
    return (
      `${info ? `${algos[info[2]] ?? `cipher ${info[2]}`}, ${info[1] === '2' ? 'SEIPD v1 + MDC' : `mdc ${info[1]}`}` : 'cipher unknown'}, ` +
      `compression ${comp ? (compNames[comp[1]] ?? comp[1]) : 'none'} (checked on a sample)`
    );
  } catch (e) {
    return `unknown (${e.message.split('\n')[0]})`;
  }
}

async function all() {
  let failed = false;
  let missed = false;
  if (ONLY === 'walscale') {
    const { runWalScale } = await import('./wal-scale.mjs');
    await runWalScale();
    return;
  }
  if (ONLY === 'walseal') {
    const { runWalSeal } = await import('./wal-seal.mjs');
    await runWalSeal();
    return;
  }
  if (ONLY !== 'pitr') {
    try {
      await main();
      missed = process.exitCode === 3;
    } catch (e) {
      console.error(`\nbench failed: ${e.message}`);
      failed = true;
    }
    cleanupMainSync(); // stop this part's cluster and free its disk before the PITR part
  }
  if (ONLY !== 'backup') {
    log('PITR benchmarks (bench/pitr.mjs)');
    try {
      const r = await runPitr({
        log,
        machine,
        commandLine: commandLine(),
        peersOnly: config.peersOnly,
        keep: config.keep,
        writeDoc: config.writeDoc,
        tmp: config.tmp,
        docPath: DOC,
      });
      failed ||= r.failed;
      missed ||= r.missed;
    } catch (e) {
      console.error(`\nbench (PITR) failed: ${e.stack ?? e.message}`);
      failed = true;
    }
    // W1's CPU per segment, step by step, in the same run (no target of its own)
    if (!config.peersOnly) {
      log('WAL segment CPU step by step (bench/wal-seal.mjs)');
      try {
        const { runWalSeal } = await import('./wal-seal.mjs');
        await runWalSeal({ writeDoc: config.writeDoc });
      } catch (e) {
        console.error(`\nbench (walseal) failed: ${e.stack ?? e.message}`);
        failed = true;
      }
    }
  }
  process.exitCode = failed ? 1 : missed ? 3 : 0;
}

all().then(
  () => cleanupSync(),
  (e) => {
    console.error(`\nbench failed: ${e.message}`);
    cleanupSync();
    process.exitCode = 1;
  },
);
