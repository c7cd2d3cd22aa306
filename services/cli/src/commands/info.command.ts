import { Command } from 'commander';
import { z } from 'zod';
import { resolveSettings } from '@dbcrate/config';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { formatBytes, formatDuration } from '@dbcrate/plumbing';
import { describeArchive, type DatabaseInfo } from '@dbcrate/catalog';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { markRequired } from '../cli.help';
import { keysFrom } from '../key-files';
import { trustFlags, trustSettings } from '../signing.options';

const schema = z.object({
  from: z.string().min(1, 'the destination URL to describe'),
  databaseId: z.string().optional(),
  json: z.boolean().optional(),
  ...trustSettings,
});

function table(rows: string[][]): string[] {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) =>
    r
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd(),
  );
}

function print(d: DatabaseInfo): void {
  const out = (s: string) => process.stdout.write(s + '\n');
  out(`database ${d.databaseId}`);
  if (d.backups.length) {
    const rows = [['KIND', 'ID', 'STATUS', 'SIZE', 'DURATION', 'TL', 'LSN', 'SIGNER']];
    for (const b of d.backups) {
      rows.push([
        b.kind,
        b.id,
        b.status + (b.reason ? ` (${b.reason})` : ''),
        b.storedBytes !== undefined ? formatBytes(b.storedBytes) : '-',
        b.durationSeconds !== undefined ? formatDuration(b.durationSeconds) : '-',
        b.timeline !== undefined ? String(b.timeline) : '-',
        b.stopLsn ? `${b.startLsn} – ${b.stopLsn}` : (b.startLsn ?? '-'),
        b.signer ? b.signer.slice(-16) : '-',
      ]);
    }
    for (const line of table(rows)) out(`  ${line}`);
  } else out('  no backups');
  for (const w of d.wal) out(`  WAL timeline ${w.timeline}: ${w.first} – ${w.last} (${w.files} segment(s))`);
  for (const w of d.windows) out(`  ${w}`);
  for (const g of d.gaps) {
    out(
      `  ERROR: WAL gap on timeline ${g.timeline}: ${g.firstMissing} missing (${g.missing} file(s)); the archive resumes at ${g.resumesAt}`,
    );
  }
  for (const p of d.problems) out(`  ERROR: ${p}`);
}

export function infoCommand(): Command {
  return markRequired(
    schema,
    trustFlags(new Command('info'))
      .description(
        'what a destination holds, per database: dumps and base backups (size, duration, LSN range, signer, status), archived WAL and restore windows',
      )
      .option('--from <DEST_URL>', 'destination URL')
      .option('--database-id <ID>', 'only this database')
      .option('--json', 'print the result as JSON')
      .action(async (_o, cmd: Command) => {
        const ctx = contextFor(cmd);
        const s = resolveSettings(schema, { flags: cmd.opts(), file: ctx.file });
        const trust = await keysFrom(s).trust();
        const storage = await openStorage(s.from);
        try {
          const info = await describeArchive(storage, { databaseId: s.databaseId, trust });
          if (s.json) process.stdout.write(JSON.stringify(info, null, 2) + '\n');
          else if (info.databases.length === 0)
            process.stdout.write(`${info.destination} holds no backups\n`);
          else info.databases.forEach(print);
          const broken = info.databases
            .filter((d) => d.gaps.length || d.problems.length)
            .map((d) => d.databaseId);
          if (broken.length) {
            throw new DbcrateError(
              ErrorCodes.WAL_GAP,
              `the WAL archive of ${broken.join(', ')} has a gap or a conflict`,
              {
                hint: 'see the ERROR lines above; take a new base backup now, then find why archiving lost WAL',
              },
            );
          }
        } finally {
          await storage.close();
        }
      }),
  );
}
