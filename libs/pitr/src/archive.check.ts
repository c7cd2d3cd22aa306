import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { connect } from '@dbcrate/postgres';
import type { Storage } from '@dbcrate/storage';
import { readClusterIdentity } from './pitr.layout';
import { walNameState } from './wal.claim';

export interface ArchiveCheckOptions {
  dbUrl: string;
  storage: Storage;
  /** The cluster's id in the destination (default: its system identifier, as wal-push uses). */
  databaseId?: string;
  /** How long to wait for the segment to arrive (default 60 s). */
  timeoutMs?: number;
  pollMs?: number;
  signal?: AbortSignal;
}

export interface ArchiveCheckResult {
  databaseId: string;
  walFile: string;
  key: string;
  storedBytes: number;
  seconds: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((res, rej) => {
    const t = setTimeout(res, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        rej(new DbcrateError(ErrorCodes.INTERRUPTED, 'check interrupted'));
      },
      { once: true },
    );
  });

function fail(message: string, hint: string): DbcrateError {
  return new DbcrateError(ErrorCodes.ARCHIVE_CHECK, message, { hint });
}

/**
 * Prove that archiving works end to end (as pgBackRest's `check`): on the primary, make sure
 * there is WAL to switch (a restore point), force a WAL switch, and wait until the segment
 * that was closed is archived, non-empty, under the cluster's id in the destination. A
 * failure names what PostgreSQL's archiver last reported.
 */
export async function checkArchiving(opts: ArchiveCheckOptions): Promise<ArchiveCheckResult> {
  const started = Date.now();
  const client = await connect(opts.dbUrl, { applicationName: 'dbcrate check' });
  try {
    const q = async (sql: string) =>
      (await client.query(sql)).rows[0] as Record<string, string | boolean | null>;
    if ((await q('SELECT pg_is_in_recovery() AS r')).r) {
      throw fail(
        'the server is a standby: a WAL switch can only be forced on the primary',
        'run check against the primary',
      );
    }
    const mode = String((await q('SHOW archive_mode')).archive_mode);
    const command = String((await q('SHOW archive_command')).archive_command);
    if (mode === 'off' || !command.trim() || command === '(disabled)') {
      throw fail(
        `archiving is off on this server (archive_mode=${mode}, archive_command='${command}')`,
        "set archive_mode = on and archive_command = 'dbcrate-wal-push %p --config …' (README), then restart",
      );
    }
    const sysid = String((await q('SELECT system_identifier::text AS s FROM pg_control_system()')).s);
    const databaseId = opts.databaseId ?? sysid;
    const identity = await readClusterIdentity(opts.storage, databaseId);
    if (identity && identity.systemIdentifier !== sysid) {
      throw fail(
        `database id ${databaseId} in ${opts.storage.displayUrl} belongs to another cluster (system identifier ${identity.systemIdentifier}, this one ${sysid})`,
        'give the --database-id this cluster archives under',
      );
    }
    // Without WAL written since the last switch, pg_switch_wal does nothing.
    await client
      .query("SELECT pg_create_restore_point('dbcrate check')")
      .catch(() => client.query('SELECT txid_current()'));
    const walFile = String((await q('SELECT pg_walfile_name(pg_switch_wal()) AS f')).f);
    const deadline = started + (opts.timeoutMs ?? 60_000);
    for (;;) {
      const state = await walNameState(opts.storage, databaseId, walFile);
      const got = state.objects[0];
      if (got) {
        return {
          databaseId,
          walFile,
          key: got.key,
          storedBytes: got.size,
          seconds: (Date.now() - started) / 1000,
        };
      }
      if (Date.now() >= deadline) {
        const a = await q(
          'SELECT last_archived_wal, last_failed_wal, last_failed_time::text AS t, failed_count::text AS n FROM pg_stat_archiver',
        );
        const why = a.last_failed_wal
          ? `; the archiver last failed on ${a.last_failed_wal} at ${a.t} (${a.n} failure(s)), see the server log`
          : a.last_archived_wal
            ? `; the archiver last archived ${a.last_archived_wal}`
            : '';
        throw fail(
          `${walFile} did not arrive in ${opts.storage.displayUrl} (database id ${databaseId}) within ${Math.round((opts.timeoutMs ?? 60_000) / 1000)} s${why}`,
          'check that archive_command archives to this destination and database id, and that it succeeds (the server log shows its errors)',
        );
      }
      await sleep(opts.pollMs ?? 500, opts.signal);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}
