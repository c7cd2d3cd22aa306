#!/usr/bin/env node
// archive_command time against the size of the archive: `dbcrate wal-push --no-agent` (the
// call that does all the work itself, so every listing it makes is in the measurement) on an
// empty archive and on one holding BENCH_WALSCALE_SEGMENTS (10,000) segments, for file://
// and s3:// (s3rver), with the partitioned layout (format 2, wal/<timeline+log>/) and the flat
// one (format 1, as archives made before it keep). See docs/benchmarks.md.
//
// Usage: node bench/wal-scale.mjs   (or node bench/run.mjs --only walscale; needs npm run build)
// Environment: BENCH_WALSCALE_SEGMENTS (10000) objects in the big archive, BENCH_WALSCALE_CALLS
// (15) archive_command calls measured per line, BENCH_TMPDIR (os.tmpdir()), BENCH_KEEP (0).
//
// Segments are fake but well-formed for wal-push: 16 MiB, mostly zeros, a long page
// header with the system identifier of a fake pg_control. The big archive is seeded with
// small objects under real WAL object names (wal-push never opens archived objects; it only
// lists the names), so seeding takes seconds, not hours.
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const CLI = join(REPO, 'bin', 'dbcrate.js');
const require = createRequire(import.meta.url);
const SEG_SIZE = 16 * 1024 * 1024;
const SYSID = 7400000000000000099n;
const N = Number(process.env.BENCH_WALSCALE_SEGMENTS || 10000);
const CALLS = Number(process.env.BENCH_WALSCALE_CALLS || 15);
const KEEP = ['1', 'true', 'yes'].includes(String(process.env.BENCH_KEEP || '').toLowerCase());

const segName = (i) => `00000001${hex8(Math.floor(i / 256))}${hex8(i % 256)}`; // 16 MiB: 256 per log
const hex8 = (n) => n.toString(16).toUpperCase().padStart(8, '0');
const partition = (name) => name.slice(0, 16);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function fakeSegment(i) {
  const buf = Buffer.alloc(SEG_SIZE);
  buf.writeUInt16LE(0xd110, 0); // XLOG_PAGE_MAGIC of PostgreSQL 15
  buf.writeUInt16LE(0x0002, 2); // XLP_LONG_HEADER
  buf.writeUInt32LE(1, 4);
  buf.writeBigUInt64LE(BigInt(i) * BigInt(SEG_SIZE), 8);
  buf.writeBigUInt64LE(SYSID, 24);
  buf.writeUInt32LE(SEG_SIZE, 32);
  buf.writeUInt32LE(8192, 36);
  randomBytes(8192).copy(buf, 8192);
  return buf;
}

function clusterJson(db, formatVersion) {
  return JSON.stringify({
    format: 'dbcrate.cluster',
    formatVersion,
    databaseId: db,
    systemIdentifier: SYSID.toString(),
    walSegmentSize: SEG_SIZE,
    createdAt: new Date().toISOString(),
  });
}

// Pushes go into a partition that already holds 128 segments: the seeded archive leaves a
// hole of 128 names in partition 20 (and seeds 128 more at the end, N in all).
const HOLE = Array.from({ length: 128 }, (_, i) => 20 * 256 + 128 + i);
const HOLES = new Set(HOLE);

/** Object keys of a seeded archive: N segments, in the layout of `formatVersion`. */
function seedKeys(db, formatVersion) {
  const out = [];
  for (let i = 0; out.length < N; i++) {
    if (HOLES.has(i)) continue;
    const name = segName(i);
    const sha = createHash('sha256').update(name).digest('hex');
    const dir = formatVersion === 2 ? `${db}/wal/${partition(name)}` : `${db}/wal`;
    out.push(`${dir}/${name}-${sha}.zst.pgp`);
  }
  return out;
}

function run(args, env) {
  return new Promise((resolve, reject) => {
    const t = process.hrtime.bigint();
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - t) / 1e6;
      if (code !== 0) reject(new Error(`wal-push exited ${code}: ${err}`));
      else resolve(ms);
    });
  });
}

async function main() {
  const base = mkdtempSync(join(process.env.BENCH_TMPDIR || os.tmpdir(), 'dbcrate-walscale-'));
  let s3server;
  try {
    // a fake data directory: pg_control (the system identifier is its first field) and pg_wal
    const pgdata = join(base, 'pgdata');
    mkdirSync(join(pgdata, 'global'), { recursive: true });
    mkdirSync(join(pgdata, 'pg_wal'), { recursive: true });
    const control = Buffer.alloc(8192);
    control.writeBigUInt64LE(SYSID, 0);
    writeFileSync(join(pgdata, 'global', 'pg_control'), control);
    execFileSync(
      process.execPath,
      [CLI, 'keys', 'generate', '--name', 'walscale', '--out', base, '--passphrase-env', 'WALSCALE_PASS'],
      {
        stdio: 'ignore',
        env: { ...process.env, WALSCALE_PASS: 'walscale-pass' },
      },
    );
    const pub = join(base, 'walscale.pub.asc');

    const S3rver = require('s3rver');
    s3server = new S3rver({
      address: '127.0.0.1',
      port: 0,
      silent: true,
      directory: join(base, 's3rver'),
      configureBuckets: [{ name: 'walscale' }],
    });
    const { port } = await s3server.run();
    const s3env = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
    const endpoint = `http://127.0.0.1:${port}`;
    const { S3Client, PutObjectCommand } = require('@aws-sdk/client-s3');
    const s3 = new S3Client({
      region: 'us-east-1',
      endpoint,
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    });
    const backends = {
      'file://': {
        url: (prefix) => `file://${join(base, 'dest', prefix)}`,
        async put(prefix, key, body) {
          const p = join(base, 'dest', prefix, key);
          mkdirSync(dirname(p), { recursive: true });
          writeFileSync(p, body);
        },
      },
      's3:// (s3rver)': {
        url: (prefix) => `s3://walscale/${prefix}?endpoint=${endpoint}&region=us-east-1&path_style=true`,
        async put(prefix, key, body) {
          await s3.send(new PutObjectCommand({ Bucket: 'walscale', Key: `${prefix}/${key}`, Body: body }));
        },
      },
    };

    // Seed every archive first, then measure round-robin (one call per archive in turn), so
    // that load from elsewhere on the machine falls on every line alike.
    const configs = [];
    for (const [backend, b] of Object.entries(backends)) {
      for (const formatVersion of [2, 1]) {
        for (const size of [0, N]) {
          const prefix = `v${formatVersion}-n${size}`;
          const db = 'walscale';
          await b.put(prefix, `${db}/cluster.json`, clusterJson(db, formatVersion));
          if (size > 0) {
            const keys = seedKeys(db, formatVersion);
            const small = randomBytes(200);
            for (let i = 0; i < keys.length; i += 64)
              await Promise.all(keys.slice(i, i + 64).map((k) => b.put(prefix, k, small)));
          }
          const layout = formatVersion === 2 ? 'partitioned (format 2)' : 'flat (format 1)';
          configs.push({ backend, b, prefix, layout, size, times: [] });
          console.log(`seeded ${backend} ${layout} with ${size} segments`);
        }
      }
    }
    if (2 * CALLS > HOLE.length) throw new Error(`BENCH_WALSCALE_CALLS: at most ${HOLE.length / 2}`);
    for (let c = 0; c < CALLS; c++) {
      for (const cfg of configs) {
        const name = segName(HOLE[c]);
        const path = join(pgdata, 'pg_wal', name);
        writeFileSync(path, fakeSegment(HOLE[c]));
        const args = [
          'wal-push',
          path,
          '--no-agent',
          '--pgdata',
          pgdata,
          '--to',
          cfg.b.url(cfg.prefix),
          '--recipient',
          pub,
        ];
        cfg.times.push(await run(args, cfg.backend.startsWith('s3') ? s3env : {}));
        rmSync(path);
      }
    }
    // The same push in this process, sealing stubbed out: only its storage requests remain,
    // the part of archive_command that depends on the archive's size.
    const dist = (lib) => require(join(REPO, 'dist', 'libs', lib, 'src', 'index.js'));
    const { WalArchiver } = dist('pitr');
    const { openStorage } = dist('storage');
    Object.assign(process.env, s3env);
    for (const cfg of configs) {
      cfg.storage = await openStorage(cfg.b.url(cfg.prefix));
      cfg.archiver = new WalArchiver({
        storage: cfg.storage,
        databaseId: 'walscale',
        systemIdentifier: SYSID.toString(),
        seal: async (plain) => plain.subarray(0, 1024),
      });
      cfg.inproc = [];
    }
    for (let c = 0; c < CALLS; c++) {
      for (const cfg of configs) {
        const path = join(pgdata, 'pg_wal', segName(HOLE[CALLS + c]));
        writeFileSync(path, fakeSegment(HOLE[CALLS + c]));
        const t = process.hrtime.bigint();
        await cfg.archiver.push(path);
        cfg.inproc.push(Number(process.hrtime.bigint() - t) / 1e6);
        rmSync(path);
      }
    }
    for (const cfg of configs) await cfg.storage.close();
    const rows = configs.map((cfg) => ({
      backend: cfg.backend,
      layout: cfg.layout,
      size: cfg.size,
      median: median(cfg.times),
      min: Math.min(...cfg.times),
      inproc: median(cfg.inproc),
    }));
    s3.destroy();

    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    console.log(
      `\n${os.cpus().length} × ${cpu}, ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB, Node ${process.version}`,
    );
    console.log(
      `| backend | layout | archive_command, empty (ms) | archive_command, ${N} segments (ms) | ratio | its storage requests, empty (ms) | …, ${N} segments (ms) | ratio |`,
    );
    console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (let i = 0; i < rows.length; i += 2) {
      const [e, f] = [rows[i], rows[i + 1]];
      console.log(
        `| ${e.backend} | ${e.layout} | ${e.median.toFixed(1)} | ${f.median.toFixed(1)} | ${(f.median / e.median).toFixed(2)} | ${e.inproc.toFixed(1)} | ${f.inproc.toFixed(1)} | ${(f.inproc / e.inproc).toFixed(2)} |`,
      );
    }
    if (process.env.BENCH_WALSCALE_JSON)
      writeFileSync(process.env.BENCH_WALSCALE_JSON, JSON.stringify(rows, null, 2));
  } finally {
    await s3server?.close().catch(() => undefined);
    if (KEEP) console.log(`kept ${base} (BENCH_KEEP)`);
    else rmSync(base, { recursive: true, force: true });
  }
}

export const runWalScale = main;

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`bench wal-scale: ${e.stack ?? e}`);
    process.exit(1);
  });
}
