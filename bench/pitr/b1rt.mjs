// B1 + RT on one cluster. B1: dbcrate basebackup ÷ pgbackrest backup --type=full, same
// cluster, same data; with, as context in the same rounds, the stock pipeline dbcrate
// basebackup replaces (pg_basebackup -Ft -X none | zstd | gpg to the same public key).
// RT (rt.mjs) then recovers the newest of those backups.
import { execFileSync } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ArchiveCluster, mkdirPg, pgbench, procCpuSeconds, treeBytes, waitForStrays } from '../lib/wal.mjs';
import { NODE } from './config.mjs';
import { recoveries } from './rt.mjs';
import { STOCK_PIPE, gpgKillAgents, stockCheck, stockPrepare } from './stock.mjs';

// ------------------------------------------------------------ B1 + RT: base backup, then recovery
/** B1 and RT into pitr.res.stages.b1 and .rt. pitr: setupPitr()'s shared object. */
export async function runB1RT(pitr) {
  const { ctx, cfg, res, base, pgbr, has, missing, fail, stopAgent } = pitr;
  const dir = join(base, 'bt');
  mkdirPg(dir);
  const st = (res.stages.b1 = { runs: {}, scale: cfg.scale });
  const rt = (res.stages.rt = { runs: {} });
  const c = new ArchiveCluster(join(dir, 'pg'));
  const withDbcrate = has('wal-push', 'basebackup');
  // what B1 leaves to RT: the cluster, dbcrate's configuration and the agent (RT stops it)
  const bt = { dir, st, rt, c, withDbcrate, dc: null, agent: undefined };
  if (!withDbcrate && !ctx.peersOnly)
    fail(
      'B1',
      'dbcrate',
      new Error(`dbcrate side not measured: ${missing('wal-push', 'basebackup')} not available`),
    );
  try {
    await baseBackups(pitr, bt);
    await recoveries(pitr, bt);
  } finally {
    c.stopSync();
    await stopAgent(bt.agent);
    await waitForStrays(pgbr.conf, 15000);
    await gpgKillAgents(pitr);
    if (!ctx.keep) rmSync(dir, { recursive: true, force: true });
  }
}

/** B1: the cluster with its data and archiving to both tools, then the base backup rounds. */
async function baseBackups(pitr, bt) {
  const {
    log,
    cfg,
    res,
    envPg,
    pgbr,
    dbc,
    cli,
    pub,
    fail,
    go,
    short,
    dbcrateConfig,
    walPushCommand,
    startAgent,
  } = pitr;
  const { dir, st, c, withDbcrate } = bt;
  await c.init();
  await c.startWith({ fsync: 'off', max_wal_size: '16GB' });
  log(`B1: pgbench -i -s ${cfg.scale}`);
  const ti = Date.now();
  await pgbench(c, ['-i', '-q', '-I', 'dtGvp', '-s', String(cfg.scale)]);
  st.initSeconds = (Date.now() - ti) / 1000;
  await c.psql('postgres', 'CHECKPOINT');
  await c.stop('fast');
  const dc = (bt.dc = withDbcrate ? dbcrateConfig(dir) : null);
  // Every segment goes to both, each in its own asynchronous mode (like with like):
  // pgBackRest archive-async=y, dbcrate's archive_command client with its agent running.
  const archiveCommand = [pgbr.archiveCommand('bt'), ...(dc ? [walPushCommand(dc.yaml)] : [])].join(' && ');
  res.commands['B1/RT archive_command'] = `archive_command = '${short(archiveCommand)}'`;
  await c.startWith({
    archive_mode: 'on',
    archive_command: archiveCommand,
    max_wal_size: '16GB',
    wal_compression: 'off',
  });
  if (dc) bt.agent = await startAgent('bt', c.data, dc);
  pgbr.addStanza('bt', c);
  await pgbr.stanzaCreate('bt');
  await c.switchAndWaitArchived(120000); // the archive works before anything is timed
  st.dbBytes = await c.dbSize('postgres');
  const server = () => c.cpuSeconds();
  // Context line: the stock-tools pipeline dbcrate basebackup replaces, the same
  // pg_basebackup tar stream (-X none: the WAL comes from the archive) through zstd -3
  // with dbcrate's default thread count and gpg to the same public key, run as postgres.
  const stock = dc ? await stockPrepare(pitr, dir, c) : null;
  if (stock) st.stockThreads = stock.threads;
  // --method exists only in newer CLIs: pass it when asked for and the CLI lists it.
  const methodArgs = [];
  if (cfg.baseMethod) {
    if (/--method\b/.test(dbc.help.basebackup || '')) methodArgs.push('--method', cfg.baseMethod);
    else
      res.notes.push(
        `BENCH_BASE_METHOD=${cfg.baseMethod} ignored: \`dbcrate basebackup\` has no --method option.`,
      );
  }
  st.baseMethod = methodArgs[1] ?? 'default';
  const cmds = {
    pgbr: () => go('B1:pgbr', pgbr.argv('bt', 'backup', '--type=full'), { env: pgbr.env(), server }),
    dbcrate: () =>
      go(
        'B1:dbcrate',
        [
          NODE,
          cli,
          'basebackup',
          '--db',
          c.url('postgres'),
          '--to',
          `file://${dc.dest}`,
          '--recipient',
          pub,
          ...methodArgs,
        ],
        {
          server,
          sample: true,
        },
      ),
    stock: () => {
      const out = join(stock.outDir, `base-${++stock.n}.tar.zst.gpg`);
      stock.last = out;
      return go('B1:stock', ['bash', '-c', STOCK_PIPE, 'b1-stock'], {
        env: { ...envPg, ...stock.env, OUT: out },
        server,
        text: stock.text,
      });
    },
  };
  const order = dc ? ['pgbr', 'dbcrate', ...(stock ? ['stock'] : [])] : ['pgbr'];
  for (let i = 0; i < cfg.runs; i++) {
    const o = order.slice(i % order.length).concat(order.slice(0, i % order.length));
    log(`B1 round ${i + 1}/${cfg.runs}: ${o.join(', ')}`);
    for (const k of o) {
      if (st.runs[k]?.broken) continue;
      await c.psql('postgres', 'CHECKPOINT');
      execFileSync('sync');
      const r = (st.runs[k] ??= { walls: [], cpu: [], serverCpu: [], rssMiB: [] });
      try {
        // The agent archives the WAL that dbcrate's own backup waits for: its CPU meanwhile
        // counts as dbcrate's (pgBackRest's detached async worker is not counted).
        const a0 = k === 'dbcrate' && bt.agent ? procCpuSeconds(bt.agent.pid) : NaN;
        const m = await cmds[k]();
        const agentCpu = k === 'dbcrate' && bt.agent ? procCpuSeconds(bt.agent.pid) - a0 : 0;
        if (k === 'dbcrate' && bt.agent) (r.agentCpu ??= []).push(agentCpu);
        r.walls.push(m.wall);
        r.cpu.push(
          m.time?.cpu === undefined ? undefined : m.time.cpu + (Number.isFinite(agentCpu) ? agentCpu : 0),
        );
        r.serverCpu.push(m.serverCpu);
        if (m.proc) r.rssMiB.push(m.proc.hwmKiB / 1024);
        if (k === 'dbcrate') r.stdout = m.stdout.trim().split('\n').slice(-3).join(' / ');
      } catch (e) {
        fail('B1', k, e);
        r.broken = true;
      }
    }
  }
  const last = pgbr.backups('bt').pop();
  if (last) st.runs.pgbr.storedBytes = pgbr.backupBytes('bt', last).bytes;
  if (dc) {
    const b = treeBytes(dc.dest, (f, p) => p.includes('/base/') && f.endsWith('.pgp'));
    // one base backup, on average (a pgdata backup is several parts: count manifests)
    const n = treeBytes(dc.dest, (f, p) => p.includes('/base/') && f === 'backup.manifest.json').files;
    if (n) st.runs.dbcrate.storedBytes = b.bytes / n;
  }
  if (stock?.last && st.runs.stock?.walls.length && !st.runs.stock.broken) {
    st.runs.stock.storedBytes = statSync(stock.last).size;
    await stockCheck(pitr, stock, st.runs.stock);
  }
}
