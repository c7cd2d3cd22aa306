import { Command } from 'commander';
import { z } from 'zod';
import { intSetting, resolveSettings } from '@dbcrate/config';
import { checkArchiving } from '@dbcrate/pitr';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { markRequired } from '../cli.help';

const schema = z.object({
  db: z.string().min(1, 'the primary to check (postgres://…)'),
  from: z.string().min(1, 'the destination URL WAL is archived to'),
  databaseId: z.string().optional(),
  timeout: intSetting(1, 3600).default(60),
  json: z.boolean().optional(),
});

export function checkCommand(): Command {
  return markRequired(
    schema,
    new Command('check')
      .description(
        'prove WAL archiving works: force a WAL switch on the primary and wait until the segment is archived',
      )
      .option('--db <POSTGRES_URL>', 'the primary (a superuser or a role allowed pg_switch_wal)')
      .option('--from <DEST_URL>', 'destination URL WAL is archived to')
      .option('--database-id <ID>', "the cluster's id in the destination (default: its system identifier)")
      .option('--timeout <SECONDS>', 'how long to wait for the segment (default 60)')
      .option('--json', 'print the result as JSON')
      .action(async (_o, cmd: Command) => {
        const ctx = contextFor(cmd);
        const s = resolveSettings(schema, { flags: cmd.opts(), file: ctx.file });
        const storage = await openStorage(s.from);
        try {
          const r = await checkArchiving({
            dbUrl: s.db,
            storage,
            databaseId: s.databaseId,
            timeoutMs: s.timeout * 1000,
            signal: ctx.signal,
          });
          if (s.json) process.stdout.write(JSON.stringify(r) + '\n');
          else
            process.stdout.write(
              `ok: ${r.walFile} archived to ${storage.displayUrl} (database id ${r.databaseId}) ${r.seconds.toFixed(1)} s after the switch\n`,
            );
        } finally {
          await storage.close();
        }
      }),
  );
}
