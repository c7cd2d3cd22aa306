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
//
// The stages are in bench/pitr/: setup.mjs (temp directory, the dbcrate under test, keys, the
// helpers the stages share), w1.mjs, w2.mjs, b1rt.mjs (+ rt.mjs, stock.mjs), rpo.mjs; the
// reports in render.mjs (verdicts, console) and markdown.mjs (docs/benchmarks.md).
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { TIME_BIN } from './lib/measure.mjs';
import { writeDoc } from './lib/report.mjs';
import { runB1RT } from './pitr/b1rt.mjs';
import { PITR_BEGIN, PITR_END } from './pitr/config.mjs';
import { pitrMarkdown } from './pitr/markdown.mjs';
import { pitrConsole, pitrVerdicts } from './pitr/render.mjs';
import { runRPO } from './pitr/rpo.mjs';
import { setupPitr } from './pitr/setup.mjs';
import { runW1 } from './pitr/w1.mjs';
import { runW2 } from './pitr/w2.mjs';

export { PITR_BEGIN, PITR_END, PITR_KNOBS, PITR_STAGES, pitrConfig } from './pitr/config.mjs';
export { pitrCleanupSync } from './pitr/setup.mjs';
export { pitrMarkdown } from './pitr/markdown.mjs';
export { pitrVerdicts } from './pitr/render.mjs';

/**
 * Run the PITR stages. ctx: { log, machine(), commandLine, peersOnly, keep, writeDoc, tmp, docPath, jsonPath }.
 * Returns { res, failed, missed }: failed = a stage or a command failed; missed = a target missed.
 */
export async function runPitr(ctx) {
  // what the stages share: res, cfg, ctx, the temp directory, the dbcrate under test, the helpers
  const pitr = await setupPitr(ctx);
  const { log, cfg, t0, res, base, pgbr, fail } = pitr;

  // ------------------------------------------------------------ run the stages
  const stages = { w1: runW1, w2: runW2, b1rt: runB1RT, rpo: runRPO };
  for (const s of cfg.stages) {
    const ts = Date.now();
    try {
      await stages[s](pitr);
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
