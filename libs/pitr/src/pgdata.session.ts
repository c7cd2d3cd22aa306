import { access, constants } from 'node:fs/promises';
import * as path from 'node:path';
import type { Client } from 'pg';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { PhysicalServerInfo } from './basebackup.pipeline';
import { readControlSystemIdentifier } from './pgdata.files';

/**
 * The server's data directory as this process sees it, proven to be this server's by the
 * system identifier in its pg_control; undefined with the reason when it cannot be read.
 */
export async function probeDataDirectory(
  client: Client,
  systemIdentifier: string,
  given?: string,
): Promise<{ dir: string } | { dir?: string; reason: string; mismatch?: boolean }> {
  let dir = given;
  if (!dir) {
    try {
      dir = (await client.query<{ data_directory: string }>('SHOW data_directory')).rows[0].data_directory;
    } catch (e) {
      return { reason: `SHOW data_directory failed: ${(e as Error).message}` };
    }
  }
  const abs = path.resolve(dir);
  try {
    await access(path.join(abs, 'global', 'pg_control'), constants.R_OK);
  } catch (e) {
    return {
      dir: abs,
      reason: `${abs}/global/pg_control is not readable here (${(e as NodeJS.ErrnoException).code})`,
    };
  }
  const sysid = await readControlSystemIdentifier(abs).catch(() => undefined);
  if (sysid !== systemIdentifier) {
    return {
      dir: abs,
      mismatch: true,
      reason: `${abs} belongs to the cluster with system identifier ${sysid ?? '(unreadable)'}, not the server's ${systemIdentifier}`,
    };
  }
  return { dir: abs };
}

export async function requireFullPageWrites(client: Client): Promise<void> {
  const { rows } = await client.query<{ full_page_writes: string }>('SHOW full_page_writes');
  if (rows[0]?.full_page_writes !== 'on') {
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      'full_page_writes is off: pages read while the server writes them could not be repaired by WAL replay',
      { hint: 'set full_page_writes = on (reload), or use --method pg_basebackup' },
    );
  }
}

export interface StopResult {
  lsn: string;
  labelfile: string;
  spcmapfile: string | null;
}

export async function backupStart(client: Client, info: PhysicalServerInfo, label: string): Promise<void> {
  const sql =
    info.versionNum >= 150000
      ? 'SELECT pg_backup_start($1, true)'
      : 'SELECT pg_start_backup($1, true, false)';
  try {
    await client.query(sql, [label]);
  } catch (e) {
    const fn = info.versionNum >= 150000 ? 'pg_backup_start' : 'pg_start_backup';
    if ((e as { code?: string }).code === '42501') {
      throw new DbcrateError(ErrorCodes.CONFIG, `this user may not run ${fn}(): ${(e as Error).message}`, {
        hint: `connect as a superuser, or GRANT EXECUTE ON FUNCTION ${fn} and its stop function to the backup user; or use --method pg_basebackup`,
        cause: e,
      });
    }
    throw e;
  }
}

/**
 * Ends the backup without waiting on the server's archiver (which waits forever while
 * archive_command fails); the caller waits for the stop WAL file in the destination instead.
 * The stop still switches WAL on a primary, so the stop segment becomes archivable.
 */
export async function backupStop(client: Client, info: PhysicalServerInfo): Promise<StopResult> {
  const sql =
    info.versionNum >= 150000
      ? 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_backup_stop(wait_for_archive => false)'
      : 'SELECT lsn::text AS lsn, labelfile, spcmapfile FROM pg_stop_backup(false, false)';
  return (await client.query<StopResult>(sql)).rows[0];
}

export async function checkpointTimeline(client: Client, fallback: number): Promise<number> {
  const { rows } = await client.query<{ timeline_id: number }>(
    'SELECT timeline_id FROM pg_control_checkpoint()',
  );
  return Math.max(fallback, Number(rows[0]?.timeline_id ?? fallback));
}
