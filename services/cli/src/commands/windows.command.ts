import { Command } from 'commander';
import { z } from 'zod';
import { resolveSettings } from '@dbcrate/config';
import {
  archiveProblem,
  archiveWindows,
  describeLiveBranches,
  describeWindow,
  type DatabaseWindows,
} from '@dbcrate/pitr';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { markRequired } from '../cli.help';
import { keysFrom } from '../key-files';
import { trustFlags, trustSettings } from '../signing.options';

const schema = z.object({
  from: z.string().min(1, 'the destination URL holding base backups and WAL'),
  databaseId: z.string().optional(),
  json: z.boolean().optional(),
  ...trustSettings,
});

function print(w: DatabaseWindows): void {
  const out = (s: string) => process.stdout.write(s + '\n');
  out(`database ${w.databaseId}: ${w.baseBackups.length} base backup(s)`);
  if (w.timelines.length === 0) out('  no restore window: no base backup has its WAL archived yet');
  for (const t of w.timelines) {
    out(`  ${describeWindow(t)}`);
    for (const g of t.gaps) {
      out(
        `  ERROR: WAL gap on timeline ${g.timeline}: ${g.firstMissing} missing (${g.missing} file(s)); the archive resumes at ${g.resumesAt}, which cannot be reached`,
      );
    }
  }
  for (const tli of w.unreachable) out(`  timeline ${tli}: WAL archived but no base backup can reach it`);
  for (const c of w.conflicts) out(`  ERROR: ${c} is archived twice with different content`);
  if (w.liveBranches.length) out(`  ERROR: ${describeLiveBranches(w.liveBranches)}`);
  for (const u of w.untrusted ?? []) out(`  base backup ${u.backupId}: untrusted (${u.reason}); not used`);
}

export function windowsCommand(): Command {
  return markRequired(
    schema,
    trustFlags(new Command('windows'))
      .description(
        'restore windows per database: earliest base backup → last archived WAL, and any gap in the WAL',
      )
      .option('--from <DEST_URL>', 'destination URL holding base backups and WAL')
      .option('--database-id <ID>', 'only this database')
      .option('--json', 'print the result as JSON')
      .action(async (_o, cmd: Command) => {
        const ctx = contextFor(cmd);
        const s = resolveSettings(schema, { flags: cmd.opts(), file: ctx.file });
        const trust = await keysFrom(s).trust();
        const storage = await openStorage(s.from);
        try {
          const all = await archiveWindows(storage, { databaseId: s.databaseId, trust });
          if (s.json) process.stdout.write(JSON.stringify({ databases: all }, null, 2) + '\n');
          else {
            if (all.length === 0)
              process.stdout.write(`${storage.displayUrl} holds no physical backups or WAL\n`);
            all.forEach(print);
          }
          const problem = archiveProblem(all);
          if (problem) throw problem;
        } finally {
          await storage.close();
        }
      }),
  );
}
