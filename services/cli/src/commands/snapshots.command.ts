import { Command } from 'commander';
import { z } from 'zod';
import { resolveSettings } from '@dbcrate/config';
import { formatBytes } from '@dbcrate/plumbing';
import { listSnapshots } from '@dbcrate/dump';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { markRequired } from '../cli.help';
import { keysFrom } from '../key-files';
import { trustFlags, trustSettings } from '../signing.options';

const schema = z.object({
  from: z.string().min(1, 'the destination URL to list'),
  databaseId: z.string().optional(),
  json: z.boolean().optional(),
  ...trustSettings,
});

export function snapshotsCommand(): Command {
  return markRequired(
    schema,
    trustFlags(new Command('snapshots'))
      .description(
        'list backups in a destination; incomplete ones (no manifest) are shown and never restored',
      )
      .option('--from <DEST_URL>', 'destination URL')
      .option('--database-id <ID>', 'only this database')
      .option('--json', 'one JSON array on stdout')
      .action(async (_o, cmd: Command) => {
        const ctx = contextFor(cmd);
        const s = resolveSettings(schema, { flags: cmd.opts(), file: ctx.file });
        const trust = await keysFrom(s).trust();
        const storage = await openStorage(s.from);
        try {
          const list = await listSnapshots(storage, { databaseId: s.databaseId, trust });
          if (s.json) {
            const rows = list.map((e) => ({
              databaseId: e.databaseId,
              snapshotId: e.snapshotId,
              time: e.time.toISOString(),
              status: e.status,
              reason: e.reason,
              storedBytes: e.manifest?.object.storedSize ?? e.dataSize,
              plaintextBytes: e.manifest?.object.plaintextSize,
              serverVersion: e.manifest?.server.version,
              database: e.manifest?.server.database,
              serverStartTime: e.manifest?.server.startTime,
              startLsn: e.manifest?.server.startLsn,
              sha256: e.manifest?.object.sha256,
              recipients: e.manifest?.encryption.recipients.map((r) => r.fingerprint),
              signer: e.signer,
              key: e.dataKey,
            }));
            process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
            return;
          }
          if (list.length === 0) {
            process.stdout.write(`no snapshots in ${storage.displayUrl}\n`);
            return;
          }
          const header = ['DATABASE', 'SNAPSHOT', 'STATUS', 'SIZE', 'SERVER'];
          const rows = list.map((e) => [
            e.databaseId,
            e.snapshotId,
            e.status + (e.reason && e.status !== 'complete' ? ` (${e.reason})` : ''),
            e.manifest
              ? formatBytes(e.manifest.object.storedSize)
              : e.dataSize !== undefined
                ? formatBytes(e.dataSize)
                : '-',
            e.manifest?.server.version ?? '-',
          ]);
          const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
          for (const r of [header, ...rows])
            process.stdout.write(
              r
                .map((c, i) => c.padEnd(widths[i]))
                .join('  ')
                .trimEnd() + '\n',
            );
        } finally {
          await storage.close();
        }
      }),
  );
}
