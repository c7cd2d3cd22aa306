// RPO: delay from a commit to its WAL segment being stored, archive_timeout on, dbcrate (and
// pgBackRest unless BENCH_PITR_RPO_PGBACKREST=0).
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cleanPgEnv, pgTool } from '../lib/cluster.mjs';
import { median } from '../lib/report.mjs';
import { ArchiveCluster, mkdirPg, sleep, waitForStrays } from '../lib/wal.mjs';
import { StageError, execFileP } from './setup.mjs';

// ------------------------------------------------------------ RPO: commit → segment stored
/** RPO into pitr.res.stages.rpo. pitr: setupPitr()'s shared object. */
export async function runRPO(pitr) {
  const { ctx, log, cfg, res, base, pgbr, has, missing, fail, short } = pitr;
  const { dbcrateConfig, walPushCommand, clientLabel, startAgent, stopAgent } = pitr;
  const dir = join(base, 'rpo');
  mkdirPg(dir);
  const st = (res.stages.rpo = {
    tools: {},
    archiveTimeout: cfg.archiveTimeout,
    seconds: cfg.rpoSeconds,
    interval: cfg.rpoInterval,
  });
  const tools = [...(has('wal-push', 'agent') ? ['dbcrate'] : []), ...(cfg.rpoPgBackRest ? ['pgbr'] : [])];
  if (!has('wal-push', 'agent') && !ctx.peersOnly)
    fail(
      'RPO',
      'dbcrate',
      new Error(`dbcrate side not measured: ${missing('wal-push', 'agent')} not available`),
    );
  // PostgreSQL 15 starts the checkpointer while the startup process still runs; if its first
  // sleep is computed then, it sleeps for checkpoint_timeout and archive_timeout forces no
  // segment switch until something wakes it (seen here). The first cluster probes whether
  // that happens; every RPO cluster then gets a pg_reload_conf() (SIGHUP wakes the
  // checkpointer) right after it starts, so both tools see archive_timeout honoured.
  let probed = false;
  const walfile = async (c) => {
    await c.psql('postgres', 'INSERT INTO rpo_probe VALUES (1)');
    return c.psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_flush_lsn())');
  };
  const switches = async (c) => {
    await c.psql('postgres', 'CREATE TABLE IF NOT EXISTS rpo_probe (a int)');
    const a = await walfile(c);
    await sleep((cfg.archiveTimeout + 3) * 1000);
    const b = await walfile(c);
    return a !== b;
  };
  for (const tool of tools) {
    const c = new ArchiveCluster(join(dir, tool));
    const dc = tool === 'dbcrate' ? dbcrateConfig(join(dir)) : null;
    const out = (st.tools[tool] = {
      label:
        tool === 'pgbr'
          ? `pgBackRest archive-push, archive-async=y, process-max=${cfg.parallel}`
          : `${clientLabel()} + agent --parallel ${cfg.parallel}`,
    });
    let agent = null;
    try {
      await c.init();
      const archiveCommand = tool === 'pgbr' ? pgbr.archiveCommand('rpo') : walPushCommand(dc.yaml);
      res.commands[`RPO ${tool}`] =
        `archive_command = '${short(archiveCommand)}', archive_timeout = ${cfg.archiveTimeout}s`;
      const settings = {
        archive_mode: 'on',
        archive_command: archiveCommand,
        archive_timeout: `${cfg.archiveTimeout}s`,
        wal_compression: 'off',
      };
      await c.startWith(settings);
      if (!probed) {
        probed = true;
        log(
          `RPO: does archive_timeout=${cfg.archiveTimeout}s switch segments right after a start (no SIGHUP)?`,
        );
        st.switchesWithoutReload = await switches(c);
        if (!st.switchesWithoutReload) {
          await c.psql('postgres', 'SELECT pg_reload_conf()');
          await sleep(500);
          st.switchesAfterReload = await switches(c);
          const msg =
            `RPO: right after the server started, archive_timeout=${cfg.archiveTimeout}s forced no segment switch within ${cfg.archiveTimeout + 3} s ` +
            `of a commit; after pg_reload_conf() (SIGHUP wakes the checkpointer) it ${st.switchesAfterReload ? 'did' : 'still did not'}. ` +
            'PostgreSQL 15 starts the checkpointer during startup; a sleep computed then lasts checkpoint_timeout. ' +
            'Every RPO cluster got a pg_reload_conf() right after its start. This affects any archiver (dbcrate and pgBackRest alike) after a restart.';
          res.notes.push(msg);
          log(msg);
          if (!st.switchesAfterReload) throw new StageError(msg);
        }
      }
      await c.psql('postgres', 'SELECT pg_reload_conf()');
      await sleep(500);
      if (tool === 'pgbr') {
        pgbr.addStanza('rpo', c);
        await pgbr.stanzaCreate('rpo');
      } else agent = await startAgent('rpo', c.data, dc);
      await c.psql('postgres', 'CREATE TABLE rpo_t (id bigserial PRIMARY KEY, at timestamptz NOT NULL)');
      await c.switchAndWaitArchived(120000); // first push done (stanza / cluster.json), agent warm
      const sysid = await c.psql('postgres', 'SELECT system_identifier FROM pg_control_system()');
      const walDir = () => {
        const d = join(dc.dest, sysid, 'wal');
        if (existsSync(d)) return d;
        for (const e of readdirSync(dc.dest))
          if (existsSync(join(dc.dest, e, 'wal'))) return join(dc.dest, e, 'wal');
        return null;
      };
      const stored =
        tool === 'pgbr'
          ? (seg) => pgbr.findWal('rpo', seg) !== null
          : (() => {
              return (seg, listing) => listing.some((f) => f.startsWith(`${seg}-`) && f.endsWith('.zst.pgp'));
            })();
      const seen = new Map();
      const pending = new Set();
      const poll = () => {
        if (pending.size === 0) return;
        let listing = [];
        if (tool === 'dbcrate') {
          const d = walDir();
          try {
            // format 2: wal/<timeline+log>/<segment>-…; format 1: flat wal/
            listing = d ? readdirSync(d, { recursive: true }).map((f) => String(f).split('/').pop()) : [];
          } catch {
            listing = [];
          }
        }
        const now = Date.now();
        for (const seg of [...pending]) {
          if (stored(seg, listing)) {
            seen.set(seg, now);
            pending.delete(seg);
          }
        }
      };
      const poller = setInterval(poll, 100);
      const commits = [];
      log(
        `RPO ${out.label}: a commit every ${cfg.rpoInterval} s for ${cfg.rpoSeconds} s, archive_timeout=${cfg.archiveTimeout}s`,
      );
      const tEnd = Date.now() + cfg.rpoSeconds * 1000;
      try {
        while (Date.now() < tEnd) {
          const tick = Date.now();
          const { stdout } = await execFileP(
            pgTool('psql'),
            [
              '-X',
              '-q',
              '-At',
              '-v',
              'ON_ERROR_STOP=1',
              '-d',
              c.conninfo('postgres'),
              '-c',
              'INSERT INTO rpo_t (at) VALUES (clock_timestamp())',
              '-c',
              "SELECT pg_walfile_name(pg_current_wal_flush_lsn()) || '|' || pg_current_wal_flush_lsn() || '|' || (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            ],
            { env: cleanPgEnv() },
          );
          const [seg, lsn, ms] = stdout.trim().split('\n').pop().split('|');
          commits.push({ seg, lsn, t: Number(ms) });
          if (!seen.has(seg)) pending.add(seg);
          await sleep(Math.max(0, tick + cfg.rpoInterval * 1000 - Date.now()));
        }
        const tw = Date.now();
        while (pending.size > 0 && Date.now() - tw < (cfg.archiveTimeout + 60) * 1000) await sleep(100);
      } finally {
        clearInterval(poller);
      }
      poll();
      const delays = commits.map((x) => (seen.has(x.seg) ? (seen.get(x.seg) - x.t) / 1000 : NaN));
      out.commits = commits.length;
      out.detail = commits.map((x) => ({ ...x, storedAt: seen.get(x.seg) ?? null }));
      out.delays = delays;
      out.segments = new Set(commits.map((x) => x.seg)).size;
      out.neverStored = delays.filter((d) => !Number.isFinite(d)).length;
      const ok = delays.filter(Number.isFinite).sort((a, b) => a - b);
      out.median = median(ok);
      out.p90 = ok.length ? ok[Math.min(ok.length - 1, Math.ceil(0.9 * ok.length) - 1)] : NaN;
      out.max = ok.length ? ok[ok.length - 1] : NaN;
      out.min = ok.length ? ok[0] : NaN;
      log(
        `  ${commits.length} commits in ${out.segments} segments: delay median ${out.median.toFixed(2)} s, max ${out.max.toFixed(2)} s${out.neverStored ? `, ${out.neverStored} never stored` : ''}`,
      );
      if (out.neverStored)
        fail(
          'RPO',
          tool,
          new Error(
            `${out.neverStored} of ${commits.length} commits: their segment never appeared in the destination`,
          ),
        );
    } catch (e) {
      fail('RPO', tool, e);
      out.error = true;
    } finally {
      await stopAgent(agent);
      c.stopSync();
      await waitForStrays(pgbr.conf, 15000);
      if (!ctx.keep) rmSync(c.root, { recursive: true, force: true });
    }
  }
  if (!ctx.keep) rmSync(dir, { recursive: true, force: true });
}
