// W2: archive backlog (pg_wal/archive_status/*.ready) under a pgbench write load, dbcrate
// against pgBackRest.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  ArchiveCluster,
  SEGMENT_BYTES,
  backlogSampler,
  lsnBytes,
  mkdirPg,
  pgbench,
  procCpuSeconds,
  readyCount,
  sleep,
  waitForStrays,
} from '../lib/wal.mjs';

// ------------------------------------------------------------ W2: backlog under a pgbench load
/** W2 into pitr.res.stages.w2. pitr: setupPitr()'s shared object. */
export async function runW2(pitr) {
  const { ctx, log, cfg, res, base, pgbr, has, missing, fail, short } = pitr;
  const { dbcrateConfig, walPushCommand, clientLabel, startAgent, stopAgent } = pitr;
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
