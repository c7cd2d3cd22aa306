// RT: dbcrate recover --latest --start ÷ pgbackrest restore + start + wait for promotion,
// same base backup content and the same WAL to replay (after B1, on B1's cluster: b1rt.mjs).
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { cleanPgEnv, freePort, pgTool } from '../lib/cluster.mjs';
import { PGBACKREST } from '../lib/pgbackrest.mjs';
import {
  freshDirPg,
  lsnBytes,
  mkdirPg,
  pgbench,
  serverCpuSeconds,
  stopDataDirSync,
  trackDataDir,
  waitForStrays,
} from '../lib/wal.mjs';
import { NODE } from './config.mjs';
import { StageError, execFileP } from './setup.mjs';

/** RT into bt.rt (pitr.res.stages.rt); bt: what runB1RT() and B1 set up. */
export async function recoveries(pitr, bt) {
  const { ctx, log, cfg, pgbr, cli, priv, has, missing, fail, go, stopAgent } = pitr;
  const { dir, rt, c, dc } = bt;
  // ---- RT: WAL after the backups, archived to both, then recover to the end of it
  log(`RT: pgbench -T ${cfg.rtWalSeconds} -c 4 -j 2 to write WAL after the base backups`);
  const lsn0 = await c.lsn();
  const pb = await pgbench(c, ['-n', '-T', String(cfg.rtWalSeconds), '-c', '4', '-j', '2']);
  rt.tps = pb.tps;
  const check = async (q) =>
    q(
      "SELECT (SELECT count(*) FROM pgbench_history) || '/' || (SELECT sum(abalance) FROM pgbench_accounts) || '/' || (SELECT sum(tbalance) FROM pgbench_tellers)",
    );
  const expected = await check((sql) => c.psql('postgres', sql));
  const lastSeg = await c.switchAndWaitArchived(600000);
  rt.walBytes = lsnBytes(await c.lsn()) - lsnBytes(lsn0);
  rt.lastSegment = lastSeg;
  rt.expected = expected;
  await c.stop('fast');
  await stopAgent(bt.agent);
  bt.agent = undefined;
  await waitForStrays(pgbr.conf, 30000);
  const rtDir = join(dir, 'rt');
  mkdirPg(rtDir);
  const psqlAt = (port) => (sql) =>
    execFileP(
      pgTool('psql'),
      [
        '-X',
        '-q',
        '-At',
        '-h',
        '127.0.0.1',
        '-p',
        String(port),
        '-U',
        'postgres',
        '-d',
        'postgres',
        '-c',
        sql,
      ],
      {
        env: cleanPgEnv(),
      },
    ).then((r) => r.stdout.trim());
  const RT_PGBR = `set -e
"$PGBR" --config="$CONF" --stanza=bt --pg1-path="$DIR" restore
"$PG_CTL" -D "$DIR" -l "$DIR.log" -w -t 3600 -o "-c port=$PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$SOCK" start > /dev/null
# promoted = the startup process has exited and the postmaster logged "ready to accept
# connections" (not "… read-only connections", which is hot standby during the replay);
# a grep every 50 ms costs next to nothing beside the replay
until grep -qF 'database system is ready to accept connections' "$DIR.log"; do
  if [ ! -f "$DIR/postmaster.pid" ]; then echo "the server stopped during recovery:" >&2; tail -20 "$DIR.log" >&2; exit 1; fi
  sleep 0.05
done`;
  const withRecover = dc && has('recover', 'wal-fetch');
  if (dc && !withRecover)
    fail(
      'RT',
      'dbcrate',
      new Error(`dbcrate side not measured: ${missing('recover', 'wal-fetch')} not available`),
    );
  const rtCmds = {
    pgbr: async (target, port) => {
      const m = await go('RT:pgbr', ['bash', '-c', RT_PGBR], {
        env: {
          ...pgbr.env(),
          LC_ALL: 'C',
          PGBR: PGBACKREST,
          CONF: pgbr.conf,
          DIR: target,
          PORT: String(port),
          SOCK: rtDir,
          PG_CTL: pgTool('pg_ctl'),
          PSQL: pgTool('psql'),
        },
        text:
          `pgbackrest --config=$TMP/pgbackrest/pgbackrest.conf --stanza=bt --pg1-path=DIR restore && ` +
          `pg_ctl -D DIR -l DIR.log -w start -o "-c port=P …" && until grep -qF 'database system is ready to accept connections' DIR.log; do sleep 0.05; done`,
      });
      return m;
    },
    dbcrate: (target, port) =>
      go(
        'RT:dbcrate',
        [
          NODE,
          cli,
          'recover',
          '--from',
          `file://${dc.dest}`,
          '--key',
          priv,
          '--target-dir',
          target,
          '--latest',
          '--start',
          '--port',
          String(port),
        ],
        {
          sample: true,
        },
      ),
  };
  const rtOrder = withRecover ? ['pgbr', 'dbcrate'] : ['pgbr'];
  for (let i = 0; i < cfg.rtRuns; i++) {
    const o = rtOrder.slice(i % rtOrder.length).concat(rtOrder.slice(0, i % rtOrder.length));
    log(`RT round ${i + 1}/${cfg.rtRuns}: ${o.join(', ')}`);
    for (const k of o) {
      const r = (rt.runs[k] ??= { walls: [], cpu: [], serverCpu: [], checked: [] });
      if (r.broken) continue;
      const target = join(rtDir, `${k}-${i}`);
      freshDirPg(target, 0o700);
      trackDataDir(target);
      const port = await freePort();
      execFileSync('sync');
      try {
        const m = await rtCmds[k](target, port);
        r.walls.push(m.wall);
        r.cpu.push(m.time?.cpu);
        r.serverCpu.push(serverCpuSeconds(target)); // the restored server: startup (replay) + the rest
        const q = psqlAt(port);
        const inRecovery = await q('SELECT pg_is_in_recovery()');
        if (inRecovery !== 'f')
          throw new StageError(
            `RT ${k}: the server was still in recovery when the command returned (the time would not count the replay)`,
          );
        const got = await check(q);
        r.checked.push(got === expected);
        if (got !== expected) {
          fail(
            'RT',
            k,
            new Error(
              `recovered cluster has ${got} (history rows/abalance sum/tbalance sum), the source had ${expected}`,
            ),
          );
          r.broken = true;
        }
      } catch (e) {
        fail('RT', k, e);
        r.broken = true;
      } finally {
        stopDataDirSync(target);
        if (!ctx.keep) {
          rmSync(target, { recursive: true, force: true });
          rmSync(`${target}.log`, { force: true });
        }
        await waitForStrays(pgbr.conf, 15000);
      }
    }
  }
}
