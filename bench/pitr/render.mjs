// The PITR part's verdicts (targets) and console summary, with the formatting helpers that
// markdown.mjs shares. Nothing here measures: every figure comes from `res`.
import { cpuPerGiBRow, gap, median, ratioRange, rangeCell } from '../lib/report.mjs';

// ---------------------------------------------------------------- verdicts and reports
export const fx = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
export const ms = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
export const pct = (xs, p) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return v.length ? v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))] : NaN;
};
export const sum = (xs) => xs.filter(Number.isFinite).reduce((a, b) => a + b, 0);

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

/** The console summary of a run (printed by runPitr()). */
export function pitrConsole(res) {
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
export function b1Label(k, b, parallel) {
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
export function b1StockNotes(res) {
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
