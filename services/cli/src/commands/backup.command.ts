import { Command } from 'commander';
import { z } from 'zod';
import { intSetting, resolveSettings } from '@dbcrate/config';
import { runBackup } from '@dbcrate/dump';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { markRequired } from '../cli.help';
import { keysFrom } from '../key-files';
import { signingFlags, signingSettings } from '../signing.options';

const schema = z.object({
  db: z.string().min(1, 'the PostgreSQL URL to back up, e.g. postgres://user@host:5432/dbname'),
  to: z.string().min(1, 'the destination URL (file://, s3://, sftp://)'),
  recipient: z.array(z.string()).min(1, 'at least one recipient public key file'),
  ...signingSettings,
  databaseId: z.string().optional(),
  compressionLevel: intSetting(1, 19).default(3),
  compressionThreads: intSetting(0, 64).default(2),
  zstd: z.enum(['auto', 'native', 'wasm']).default('auto'),
  pgBinDir: z.string().optional(),
  json: z.boolean().optional(),
});

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function backupCommand(): Command {
  return markRequired(
    schema,
    signingFlags(new Command('backup'))
      .description('stream pg_dump → zstd → OpenPGP → destination; prints the snapshot id')
      .option('--db <POSTGRES_URL>', 'database to back up (password via the URL, PGPASSWORD or ~/.pgpass)')
      .option(
        '--to <DEST_URL>',
        'file:///abs/path | s3://bucket/prefix?endpoint=…&region=…&path_style=true | sftp://user@host:port/path',
      )
      .option(
        '--recipient <PUBKEY_FILE>',
        'organisation public key to encrypt to (repeat for several)',
        collect,
      )
      .option('--database-id <ID>', 'name of this database in the destination (default: the database name)')
      .option('--compression-level <N>', 'zstd level 1-19 (default 3)')
      .option('--compression-threads <N>', 'zstd worker threads (default 2, 0 = none)')
      .option('--zstd <IMPL>', 'zstd implementation: auto | native | wasm (default auto)')
      .option(
        '--pg-bin-dir <DIR>',
        'directory holding pg_dump (default /usr/lib/postgresql/<server major>/bin)',
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
          const r = await runBackup({
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
          if (s.json) {
            process.stdout.write(
              JSON.stringify({
                snapshotId: r.manifest.snapshotId,
                databaseId: r.manifest.databaseId,
                key: r.dataKey,
                manifest: r.manifestKey,
                signature: r.signatureKey,
                signer: r.manifest.signer,
                storedBytes: r.manifest.object.storedSize,
              }) + '\n',
            );
          } else {
            process.stdout.write(`${r.manifest.snapshotId}\n`);
          }
        } finally {
          await storage.close();
        }
      }),
  );
}
