import { Command } from 'commander';
import { z } from 'zod';
import { booleanSetting, intSetting, resolveSettings } from '@dbcrate/config';
import { runRestore } from '@dbcrate/dump';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { markRequired } from '../cli.help';
import { keysFrom } from '../key-files';
import { trustFlags, trustSettings } from '../signing.options';

const schema = z.object({
  from: z.string().min(1, 'the destination URL holding the backup'),
  key: z.string().min(1, 'the private key file (e.g. ORG.key.asc)'),
  to: z.string().min(1, 'the PostgreSQL URL of the (empty) database to restore into'),
  databaseId: z.string().optional(),
  jobs: intSetting(1, 64).default(1),
  passphraseEnv: z.string().optional(),
  clean: booleanSetting.default(false),
  production: booleanSetting.default(false),
  iKnow: booleanSetting.default(false),
  noOwner: booleanSetting.default(false),
  spoolDir: z.string().optional(),
  pgBinDir: z.string().optional(),
  ...trustSettings,
});

export function restoreCommand(): Command {
  return markRequired(
    schema,
    trustFlags(new Command('restore'))
      .description('check, decrypt and restore a snapshot into a database')
      .argument('<SNAPSHOT_ID|latest>', 'snapshot id from `dbcrate snapshots`, or latest')
      .option('--from <DEST_URL>', 'destination URL holding the backup')
      .option('--key <PRIVKEY_FILE>', 'organisation private key')
      .option('--to <POSTGRES_URL>', 'database to restore into (must be empty unless --clean)')
      .option(
        '--database-id <ID>',
        'which database the snapshot belongs to, when the destination holds several',
      )
      .option('--jobs <N>', 'parallel pg_restore jobs; above 1 the decrypted dump is spooled to local disk')
      .option('--passphrase-env <VAR>', 'environment variable holding the private key passphrase')
      .option('--clean', 'restore into a non-empty database, dropping the objects the backup contains first')
      .option(
        '--production',
        'treat the target as production (also set by the dbcrate.production=on database setting)',
      )
      .option('--i-know', 'consent to restoring into a production target')
      .option('--no-owner', 'do not restore object ownership')
      .option('--spool-dir <DIR>', 'where --jobs > 1 spools the decrypted dump (default: the temp directory)')
      .option('--pg-bin-dir <DIR>', 'directory holding pg_restore')
      .action(async (snapshot: string, _o, cmd: Command) => {
        const ctx = contextFor(cmd);
        const flags = cmd.opts();
        // commander's --no-owner sets owner=false; map it onto our setting
        const s = resolveSettings(schema, {
          flags: { ...flags, noOwner: flags.owner === false ? true : undefined },
          file: ctx.file,
        });
        const keys = keysFrom(s);
        const trust = await keys.trust();
        const [key] = await keys.decryptionKeys();
        const storage = await openStorage(s.from);
        try {
          const r = await runRestore({
            storage,
            snapshot,
            databaseId: s.databaseId,
            keys: [key],
            trust,
            targetUrl: s.to,
            jobs: s.jobs,
            clean: s.clean,
            production: s.production,
            iKnow: s.iKnow,
            noOwner: s.noOwner,
            spoolDir: s.spoolDir,
            pgBinDir: s.pgBinDir,
            signal: ctx.signal,
            progress: ctx.progress,
          });
          process.stdout.write(
            `restored ${r.manifest.databaseId}/${r.manifest.snapshotId} into ${r.target} in ${r.seconds.toFixed(1)}s\n`,
          );
        } finally {
          await storage.close();
        }
      }),
  );
}
