// W1: archive_command wall time per 16 MiB segment: dbcrate wal-push (agent running) ÷
// pgbackrest archive-push; the same real segments, called in sequence as PostgreSQL does.
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { median } from '../lib/report.mjs';
import {
  ArchiveCluster,
  SEGMENT_BYTES,
  fillSegments,
  freshDirPg,
  mkdirPg,
  procCpuSeconds,
  treeBytes,
  waitForStrays,
} from '../lib/wal.mjs';
import { StageError, execFileP } from './setup.mjs';

// ------------------------------------------------------------ W1: archive_command per segment
/** W1 into pitr.res.stages.w1. pitr: setupPitr()'s shared object. */
export async function runW1(pitr) {
  const { ctx, log, cfg, res, base, uid, gid, envPg, pgbr, dbc, has, missing, fail, go } = pitr;
  const { dbcrateConfig, walPushCommand, clientLabel, startAgent, stopAgent } = pitr;
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
