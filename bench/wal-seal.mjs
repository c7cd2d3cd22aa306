#!/usr/bin/env node
// Where the CPU of one archived WAL segment goes, step by step: what dbcrate's seal worker
// does (zstd -3, sha256 for the object name, OpenPGP SEIPD v1 = AES-256-CFB + SHA-1 MDC, the
// Ed25519 signature inside, the session key packet) next to the work pgBackRest does for
// the same segment (zstd -3 with the system libzstd, SHA-1 of the segment, AES-256-CBC of the
// compressed bytes), on real segments, each step timed alone in this process (user+sys of
// the thread doing it, median per segment). It separates the work both tools share from
// what dbcrate's guarantees add (authenticated encryption that `gpg -d` opens, a signature).
//
// Usage: part of npm run bench (after the PITR part); alone: node bench/run.mjs --only walseal
// (or node bench/wal-seal.mjs; needs npm run build)
// Environment: BENCH_WALSEAL_SEGMENTS (8) segments, BENCH_WALSEAL_REPS (7) passes over them,
// BENCH_TMPDIR, BENCH_KEEP, BENCH_DOC=0 (print only, do not write docs/benchmarks.md).
import { execFileSync, spawnSync } from 'node:child_process';
import { createCipheriv, createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArchiveCluster, fillSegments, SEGMENT_BYTES } from './lib/wal.mjs';
import { median, writeDoc } from './lib/report.mjs';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const lib = (name) => require(join(REPO, 'dist', 'libs', name, 'src', 'index.js'));
const N = Number(process.env.BENCH_WALSEAL_SEGMENTS || 8);
const REPS = Number(process.env.BENCH_WALSEAL_REPS || 7);
const flag = (k) => ['1', 'true', 'yes'].includes(String(process.env[k] ?? '').toLowerCase());
const KEEP = flag('BENCH_KEEP');
const WRITE_DOC = process.env.BENCH_DOC !== '0';
export const WALSEAL_BEGIN =
  '<!-- BEGIN GENERATED WALSEAL by `node bench/run.mjs --only walseal`: do not edit by hand -->';
export const WALSEAL_END = '<!-- END GENERATED WALSEAL -->';

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/**
 * CPU ms per segment of each step: in every pass each step runs over all the segments (its
 * CPU summed, over the segment count), the steps in a rotating order so that a machine
 * that speeds up or slows down during the run shifts them all alike; the median over the
 * passes. Differences of steps (signed − unsigned) are taken per pass, then the median.
 */
async function timeSteps(steps, measured = {}) {
  const names = [...Object.keys(steps), ...Object.keys(measured)];
  const per = Object.fromEntries(names.map((k) => [k, []]));
  for (let r = 0; r < REPS; r++) {
    const order = names.map((_, i) => names[(i + r) % names.length]);
    for (const name of order) {
      // a step measured elsewhere (another process) says its own ms per segment
      if (measured[name]) {
        per[name].push(measured[name]());
        continue;
      }
      const t = cpuMs();
      for (let i = 0; i < N; i++) await steps[name](i);
      per[name].push((cpuMs() - t) / N);
    }
  }
  return per;
}

export async function runWalSeal({ writeDoc: write = WRITE_DOC } = {}) {
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`;
  const tmp = mkdtempSync(join(process.env.BENCH_TMPDIR || os.tmpdir(), 'dbcrate-walseal-'));
  chmodSync(tmp, 0o755); // the cluster runs as postgres
  const started = new Date();
  const c = new ArchiveCluster(join(tmp, 'pg'));
  try {
    await c.init();
    await c.startWith({ wal_keep_size: '4GB', max_wal_size: '16GB', wal_compression: 'off', fsync: 'off' });
    console.log(`walseal: writing ${N} WAL segments`);
    const names = await fillSegments(c, N);
    await c.stop('fast');
    const files = names.map((n) => join(c.data, 'pg_wal', n));
    const segs = files.map((f) => readFileSync(f));
    return await measureAll({ files, segs, tmp, machine, started, write });
  } finally {
    await c.stop('immediate').catch(() => undefined);
    if (!KEEP) rmSync(tmp, { recursive: true, force: true });
  }
}

async function measureAll({ files, segs, tmp, machine, started, write }) {
  const crypto = lib('crypto');
  const codec = lib('compression').getCodec('zstd', { implementation: 'auto' });
  const { sealWal, sha256Hex } = lib('pitr');
  const keyDir = join(tmp, 'keys');
  execFileSync(
    process.execPath,
    [join(REPO, 'bin', 'dbcrate.js'), 'keys', 'generate', '--name', 'b', '--out', keyDir],
    {
      stdio: 'ignore',
    },
  );
  const recipients = [await crypto.loadRecipientKey(readFileSync(join(keyDir, 'b.pub.asc'), 'utf8'))];
  const sk = await crypto.generateSigningKey({ name: 'walseal' });
  const signingKey = await crypto.loadSigningKey(sk.privateArmored);
  const cipher = crypto.getCipher('openpgp');
  const into = Buffer.allocUnsafe(SEGMENT_BYTES + (SEGMENT_BYTES >> 7));
  const compressed = [];
  for (const s of segs) compressed.push(Buffer.from(await codec.compressBuffer(s, { level: 3, threads: 0 })));
  const zBytes = compressed.reduce((n, b) => n + b.length, 0) / compressed.length;
  const notations = { 'binding@dbcrate': 'walseal/000000010000000000000001' };
  const aesKey = randomBytes(32);
  const edKey = generateKeyPairSync('ed25519').privateKey;
  const iv = randomBytes(16);

  // warm-up: key loading, JIT, the zstd context
  await sealWal(segs[0], { recipients, signingKey, databaseId: 'walseal' }, '000000010000000000000001');

  const sealOpts = { recipients, signingKey, databaseId: 'walseal' };
  const per = await timeSteps(
    {
      zstd: (i) => codec.compressBuffer(segs[i], { level: 3, threads: 0, into }),
      sha256: (i) => sha256Hex(segs[i]),
      sha1: (i) => createHash('sha1').update(segs[i]).digest(),
      cfb: (i) => {
        const e = createCipheriv('aes-256-cfb', aesKey, iv);
        e.update(compressed[i]);
        e.final();
      },
      cbc: (i) => {
        const e = createCipheriv('aes-256-cbc', aesKey, iv);
        e.update(compressed[i]);
        e.final();
      },
      mdc: (i) => createHash('sha1').update(compressed[i]).digest(),
      sigHash: (i) => createHash('sha256').update(compressed[i]).digest(),
      ed25519: (i) => sign(null, compressed[i].subarray(0, 32), edKey),
      empty: () => cipher.encryptBuffer(Buffer.alloc(0), recipients),
      encrypt: (i) => cipher.encryptBuffer(compressed[i], recipients),
      encryptSigned: (i) => cipher.encryptBuffer(compressed[i], recipients, { signingKey, notations }),
      seal: async (i) => {
        sha256Hex(segs[i]);
        await sealWal(segs[i], sealOpts, '000000010000000000000001');
      },
    },
    { zstdCli: () => zstdCliMs(files) },
  );
  const r = Object.fromEntries(Object.entries(per).map(([k, xs]) => [k, median(xs)]));
  const diff = (a, b) => median(per[a].map((x, k) => x - per[b][k]));
  r.signature = diff('encryptSigned', 'encrypt');
  r.seipd = diff('encrypt', 'empty');
  r.cfbOverCbc = diff('cfb', 'cbc');
  return report({ r, zBytes, machine, started, write });
}

/**
 * ms per segment of libzstd 1.5.x as the system has it (what pgBackRest links), from the
 * `zstd` CLI's own benchmark mode: level 3, one thread, in memory, no start-up; the median
 * over three of the segments, a second each.
 */
function zstdCliMs(files) {
  const speeds = files.slice(0, 3).map((f) => {
    const run = spawnSync('zstd', ['-b3', '-e3', '--single-thread', '-i1', f], { encoding: 'utf8' });
    const text = `${run.stdout}${run.stderr}`; // zstd prints its results on stderr
    const last =
      text
        .split(/[\r\n]/)
        .filter((l) => /MB\/s/.test(l))
        .at(-1) ?? '';
    const mbps = Number(/([\d.]+) MB\/s/.exec(last)?.[1]);
    if (!(mbps > 0)) throw new Error(`zstd -b3 printed no speed: ${text.slice(-300)}`);
    return mbps;
  });
  // zstd's MB is 10^6 bytes
  return (SEGMENT_BYTES / (median(speeds) * 1e6)) * 1000;
}

function report({ r, zBytes, machine, started, write }) {
  const f = (x) => x.toFixed(1);
  const zstdVersion = execFileSync('zstd', ['--version'], { encoding: 'utf8' }).match(/v[\d.]+/)?.[0] ?? '?';
  const napi = lib('compression').zstdNapiVersion?.() ?? '?';
  const pkesk = r.empty;
  const seipd = r.seipd;
  const sig = r.signature;
  const ours = r.zstd + r.sha256 + r.encryptSigned;
  const theirs = r.zstdCli + r.sha1 + r.cbc;
  const rows = [
    [
      'compress: zstd -3',
      `${f(r.zstd)} (libzstd ${napi}, zstd-napi)`,
      `${f(r.zstdCli)} (libzstd of zstd ${zstdVersion}: its CLI's benchmark mode, -b3 --single-thread)`,
    ],
    [
      'hash of the segment',
      `${f(r.sha256)} (sha256: the object's name)`,
      `${f(r.sha1)} (SHA-1: the file's name)`,
    ],
    [
      'cipher over the compressed bytes',
      `${f(r.cfb)} (AES-256-CFB, OpenSSL)`,
      `${f(r.cbc)} (AES-256-CBC, OpenSSL)`,
    ],
    ['integrity of the ciphertext', `${f(r.mdc)} (SHA-1 MDC)`, '— (none)'],
    [
      'signature',
      `${f(r.sigHash + r.ed25519)} (SHA-256 over the compressed bytes ${f(r.sigHash)}, Ed25519 ${f(r.ed25519)}; signed − unsigned message: ${f(sig)})`,
      '— (none)',
    ],
    ['key packet', `${f(pkesk)} (X25519 PKESK, openpgp.js; a message of 0 bytes)`, '— (passphrase)'],
    ['SEIPD v1 as dbcrate writes it (CFB + MDC + framing)', `${f(seipd)}`, ''],
    ['**total**', `**${f(ours)}** (zstd + sha256 + signed message)`, `**${f(theirs)}** (zstd + SHA-1 + CBC)`],
    ['seal worker as the agent runs it (sha256 + sealWal)', f(r.seal), ''],
  ];
  const lines = [
    WALSEAL_BEGIN,
    '',
    `### WAL segment CPU, step by step (${started.toISOString().slice(0, 10)})`,
    '',
    `${N} real 16 MiB segments (INSERTs of mixed random/repeated rows, as W1's), zstd -3 to ${(zBytes / 2 ** 20).toFixed(1)} MiB each on average; every step timed alone in one node process over all the segments, ${REPS} passes with the steps in a rotating order, CPU ms per segment (median over the passes; a difference of two steps is taken within each pass). pgBackRest's column is the same work done the way pgBackRest does it (its AES and SHA-1 are OpenSSL's too; its zstd is the system libzstd, timed by the \`zstd\` CLI's own benchmark mode: wall time of an in-memory loop on one thread, so CPU time).`,
    '',
    '|  |  |',
    '| --- | --- |',
    '| command | `node bench/run.mjs --only walseal` |',
    `| started | ${started.toISOString()} |`,
    `| machine | ${machine}, node ${process.version} |`,
    '',
    "| step (CPU ms per segment) | dbcrate | pgBackRest's equivalent |",
    '| --- | --- | --- |',
    ...rows.map((c) => `| ${c.join(' | ')} |`),
    '',
    `What dbcrate's guarantees add per segment, from the steps measured alone: the MDC ${f(r.mdc)} + the signature ${f(r.sigHash + r.ed25519)} + the key packet ${f(pkesk)} + CFB over CBC ${f(r.cfbOverCbc)} = **${f(r.mdc + r.sigHash + r.ed25519 + pkesk + r.cfbOverCbc)} ms**. The whole messages (the SEIPD and signed − unsigned figures) include allocation and garbage collection and move with the machine's load.`,
    '',
    WALSEAL_END,
  ];
  const section = lines.join('\n');
  console.log(section);
  // BENCH_DOC_FILE: test the harness on a copy (as bench/run.mjs does)
  const doc = process.env.BENCH_DOC_FILE || join(REPO, 'docs', 'benchmarks.md');
  if (write) writeDoc(doc, section, { begin: WALSEAL_BEGIN, end: WALSEAL_END });
  return r;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  runWalSeal().catch((e) => {
    console.error(`walseal failed: ${e.stack ?? e}`);
    process.exit(1);
  });
}
