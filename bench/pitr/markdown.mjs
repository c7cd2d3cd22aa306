// The PITR part's section of docs/benchmarks.md, from a run's `res` (pitrVerdicts() first).
import { CPU_PER_GIB_HEADER, CPU_PER_GIB_NOTE, RANGE_NOTE, cpuPerGiBCells, median } from '../lib/report.mjs';
import { PITR_BEGIN, PITR_END, PITR_KNOBS } from './config.mjs';
import { b1Label, b1StockNotes, fx, ms, pct, sum } from './render.mjs';

const MiB = 1024 * 1024;
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
