import { Command } from 'commander';
import { z } from 'zod';
import { intSetting, resolveSettings } from '@dbcrate/config';
import {
  BASE_BACKUP_METHODS,
  baseStoredSize,
  DEFAULT_ARCHIVE_TIMEOUT,
  DEFAULT_PARALLEL,
  takeBaseBackup,
} from '@dbcrate/pitr';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { markRequired } from '../cli.help';
import { keysFrom } from '../key-files';
import { signingFlags, signingSettings } from '../signing.options';

const schema = z.object({
  db: z.string().min(1, 'the PostgreSQL URL of the cluster to back up (a user with REPLICATION)'),
  to: z.string().min(1, 'the destination URL (file://, s3://, sftp://)'),
  recipient: z.array(z.string()).min(1, 'at least one recipient public key file'),
  ...signingSettings,
  databaseId: z.string().optional(),
  compressionLevel: intSetting(1, 19).default(3),
  compressionThreads: intSetting(0, 64).default(2),
  zstd: z.enum(['auto', 'native', 'wasm']).default('auto'),
  pgBinDir: z.string().optional(),
  method: z.enum(BASE_BACKUP_METHODS).default('auto'),
  parallel: intSetting(1, 64).default(DEFAULT_PARALLEL),
  pgdata: z.string().optional(),
  archiveTimeout: intSetting(1, 86400).default(DEFAULT_ARCHIVE_TIMEOUT),
  json: z.boolean().optional(),
});

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function basebackupCommand(): Command {
  return markRequired(
    schema,
    signingFlags(new Command('basebackup'))
      .description(
        'physical base backup for point-in-time recovery: the data directory (or pg_basebackup) → zstd → OpenPGP → destination; prints the backup id',
      )
      .option(
        '--db <POSTGRES_URL>',
        'cluster to back up, as a user with REPLICATION (password via the URL, PGPASSWORD or ~/.pgpass)',
      )
      .option(
        '--to <DEST_URL>',
        'file:///abs/path | s3://bucket/prefix?endpoint=…&region=…&path_style=true | sftp://user@host:port/path',
      )
      .option(
        '--recipient <PUBKEY_FILE>',
        'organisation public key to encrypt to (repeat for several)',
        collect,
      )
      .option(
        '--database-id <ID>',
        'name of this cluster in the destination (default: its system identifier); must match wal-push',
      )
      .option('--compression-level <N>', 'zstd level 1-19 (default 3)')
      .option('--compression-threads <N>', 'zstd worker threads (default 2, 0 = none)')
      .option('--zstd <IMPL>', 'zstd implementation: auto | native | wasm (default auto)')
      .option(
        '--pg-bin-dir <DIR>',
        'directory holding pg_basebackup (default /usr/lib/postgresql/<server major>/bin)',
      )
      .option(
        '--method <METHOD>',
        "auto | pgdata | pg_basebackup (default auto: pgdata when the data directory is readable here and is the server's)",
      )
      .option('--parallel <N>', `pgdata: parts written at once, 1-64 (default ${DEFAULT_PARALLEL})`)
      .option('--pgdata <DIR>', "pgdata: the server's data directory (default: SHOW data_directory)")
      .option(
        '--archive-timeout <SECONDS>',
        `pgdata: seconds to wait for the backup's last WAL file to reach the destination, 1-86400 (default ${DEFAULT_ARCHIVE_TIMEOUT})`,
      )
      .option('--json', 'print the result as JSON')
      .action(async (_o, cmd: Command) => {
        const ctx = contextFor(cmd);
        const s = resolveSettings(schema, { flags: cmd.opts(), file: ctx.file });
        const keys = keysFrom(s);
        const recipients = await keys.recipients();
        const signingKey = await keys.signingKey();
        const storage = await openStorage(s.to);
        try {
          const r = await takeBaseBackup({
            method: s.method,
            parallel: s.parallel,
            pgdata: s.pgdata,
            archiveTimeout: s.archiveTimeout,
            dbUrl: s.db,
            storage,
            recipients,
            signingKey,
            databaseId: s.databaseId,
            compression: { level: s.compressionLevel, threads: s.compressionThreads, implementation: s.zstd },
            pgBinDir: s.pgBinDir,
            signal: ctx.signal,
            progress: ctx.progress,
          });
          const m = r.manifest;
          if (s.json) {
            process.stdout.write(
              JSON.stringify({
                backupId: m.backupId,
                databaseId: m.databaseId,
                startLsn: m.startLsn,
                stopLsn: m.stopLsn,
                timeline: m.timeline,
                startWalFile: m.startWalFile,
                stopWalFile: m.stopWalFile,
                method: m.tool.name === 'dbcrate' ? 'pgdata' : 'pg_basebackup',
                key: r.dataKey,
                keys: r.dataKeys ?? [r.dataKey],
                manifest: r.manifestKey,
                signature: r.signatureKey,
                signer: m.signer,
                storedBytes: baseStoredSize(m),
              }) + '\n',
            );
          } else {
            process.stdout.write(`${m.backupId}\n`);
          }
        } finally {
          await storage.close();
        }
      }),
  );
}
