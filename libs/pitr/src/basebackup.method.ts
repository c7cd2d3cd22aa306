import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import { connect, serverInfo } from '@dbcrate/postgres';
import { runBaseBackup, type BaseBackupResult } from './basebackup.pipeline';
import { runPgdataBackup, type PgdataBackupOptions } from './pgdata.backup';
import { probeDataDirectory } from './pgdata.session';

/** pgdata: read the data directory (fast, on the database host); pg_basebackup: the server's tar stream. */
export const BASE_BACKUP_METHODS = ['auto', 'pgdata', 'pg_basebackup'] as const;
export type BaseBackupMethod = (typeof BASE_BACKUP_METHODS)[number];

export interface TakeBaseBackupOptions extends PgdataBackupOptions {
  /** Default auto: pgdata when the server's data directory is readable here and is this server's. */
  method?: BaseBackupMethod;
}

/** Which method `auto` picks for this server, and why. */
export async function chooseBaseBackupMethod(
  dbUrl: string,
  pgdata?: string,
): Promise<{ method: 'pgdata' | 'pg_basebackup'; reason: string }> {
  const client = await connect(dbUrl);
  try {
    const info = await serverInfo(client);
    if (!info.systemIdentifier)
      return { method: 'pg_basebackup', reason: 'pg_control_system() is not readable' };
    const { rows } = await client.query<{ full_page_writes: string }>('SHOW full_page_writes');
    if (rows[0]?.full_page_writes !== 'on')
      return { method: 'pg_basebackup', reason: 'full_page_writes is off' };
    const probe = await probeDataDirectory(client, info.systemIdentifier, pgdata);
    if ('reason' in probe) return { method: 'pg_basebackup', reason: probe.reason };
    return { method: 'pgdata', reason: `the data directory ${probe.dir} is readable here` };
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** `dbcrate basebackup`: the method asked for, or the one `auto` picks (logged at info). */
export async function takeBaseBackup(opts: TakeBaseBackupOptions): Promise<BaseBackupResult> {
  let method = opts.method ?? 'auto';
  if (!BASE_BACKUP_METHODS.includes(method)) {
    throw new DbcrateError(ErrorCodes.USAGE, `unknown base backup method "${String(method)}"`, {
      hint: `use one of ${BASE_BACKUP_METHODS.join(', ')}`,
    });
  }
  if (method === 'auto') {
    const choice = await chooseBaseBackupMethod(opts.dbUrl, opts.pgdata);
    logger().info({ method: choice.method, reason: choice.reason }, `base backup method: ${choice.method}`);
    method = choice.method;
  }
  return method === 'pgdata' ? runPgdataBackup(opts) : runBaseBackup(opts);
}
