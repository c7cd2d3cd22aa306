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
// Environment: BENCH_WALSEAL_SEGMENTS (8) segments, BENCH_WALSEAL_REPS (5) passes over them,
// BENCH_TMPDIR, BENCH_KEEP, BENCH_DOC=0 (print only, do not write docs/benchmarks.md).
import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
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
const REPS = Number(process.env.BENCH_WALSEAL_REPS || 5);
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

/** Median over segments × reps of the CPU ms of `fn(segmentIndex)` (awaited). */
async function timed(fn) {
  const xs = [];
  for (let r = 0; r < REPS; r++) {
    for (let i = 0; i < N; i++) {
      const t = cpuMs();
      await fn(i);
      xs.push(cpuMs() - t);
    }
  }
  return median(xs);
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
  const iv = randomBytes(16);

  // warm-up: key loading, JIT, the zstd context
  await sealWal(segs[0], { recipients, signingKey, databaseId: 'walseal' }, '000000010000000000000001');

  const r = {};
  r.zstd = await timed((i) => codec.compressBuffer(segs[i], { level: 3, threads: 0, into }));
  r.sha256 = await timed((i) => sha256Hex(segs[i]));
  r.sha1 = await timed((i) => createHash('sha1').update(segs[i]).digest());
  r.cfb = await timed((i) => {
    const e = createCipheriv('aes-256-cfb', aesKey, iv);
    e.update(compressed[i]);
    e.final();
  });
  r.cbc = await timed((i) => {
    const e = createCipheriv('aes-256-cbc', aesKey, iv);
    e.update(compressed[i]);
    e.final();
  });
  r.mdc = await timed((i) => createHash('sha1').update(compressed[i]).digest());
  r.sigHash = await timed((i) => createHash('sha256').update(compressed[i]).digest());
  r.empty = await timed(() => cipher.encryptBuffer(Buffer.alloc(0), recipients));
  r.encrypt = await timed((i) => cipher.encryptBuffer(compressed[i], recipients));
  r.encryptSigned = await timed((i) =>
    cipher.encryptBuffer(compressed[i], recipients, { signingKey, notations }),
  );
  r.seal = await timed(async (i) => {
    sha256Hex(segs[i]);
    await sealWal(segs[i], { recipients, signingKey, databaseId: 'walseal' }, '000000010000000000000001');
  });
  r.zstdCli = zstdCliCpu(files);
  return report({ r, zBytes, machine, started, write });
}

/** CPU ms per segment of `zstd -3 --single-thread` (the system libzstd, what pgBackRest links), start-up included. */
function zstdCliCpu(files) {
  const text = execFileSync(
    'bash',
    [
      '-c',
      'TIMEFORMAT="%U %S"; { time (for r in $(seq "$1"); do for f in "${@:2}"; do zstd -q -3 --single-thread -c "$f" > /dev/null; done; done) ; } 2>&1',
      'x',
      String(REPS),
      ...files,
    ],
    { encoding: 'utf8' },
  );
  const [u, s] = text.trim().split(/\s+/).map(Number);
  return ((u + s) * 1000) / (REPS * files.length);
}

function report({ r, zBytes, machine, started, write }) {
  const f = (x) => x.toFixed(1);
  const zstdVersion = execFileSync('zstd', ['--version'], { encoding: 'utf8' }).match(/v[\d.]+/)?.[0] ?? '?';
  const napi = lib('compression').zstdNapiVersion?.() ?? '?';
  const pkesk = r.empty;
  const seipd = r.encrypt - pkesk;
  const sig = r.encryptSigned - r.encrypt;
  const ours = r.zstd + r.sha256 + r.encryptSigned;
  const theirs = r.zstdCli + r.sha1 + r.cbc;
  const rows = [
    [
      'compress: zstd -3',
      `${f(r.zstd)} (libzstd ${napi}, zstd-napi)`,
      `${f(r.zstdCli)} (zstd ${zstdVersion} CLI, start-up included)`,
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
      `${f(sig)} (SHA-256 + Ed25519 inside the encryption; alone: SHA-256 ${f(r.sigHash)})`,
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
    `${N} real 16 MiB segments (INSERTs of mixed random/repeated rows, as W1's), zstd -3 to ${(zBytes / 2 ** 20).toFixed(1)} MiB each on average; every step timed alone in one node process, ${REPS} passes, CPU ms per segment (median). pgBackRest's column is the same work done the way pgBackRest does it (its AES and SHA-1 are OpenSSL's too; its zstd is the system libzstd, timed here through the \`zstd\` CLI, one process per segment).`,
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
    `What dbcrate's guarantees add per segment: the MDC ${f(r.mdc)} + the signature ${f(sig)} + the key packet ${f(pkesk)} + CFB over CBC ${f(r.cfb - r.cbc)} = **${f(r.mdc + sig + pkesk + r.cfb - r.cbc)} ms**.`,
    '',
    WALSEAL_END,
  ];
  const section = lines.join('\n');
  console.log(section);
  if (write)
    writeDoc(join(REPO, 'docs', 'benchmarks.md'), section, { begin: WALSEAL_BEGIN, end: WALSEAL_END });
  return r;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  runWalSeal().catch((e) => {
    console.error(`walseal failed: ${e.stack ?? e}`);
    process.exit(1);
  });
}
