import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { z } from 'zod';
import { booleanSetting, intSetting, resolveSettings } from '@dbcrate/config';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import {
  isLsn,
  parseTargetTime,
  recoverCluster,
  type RecoveryTarget,
  type TimelineChoice,
} from '@dbcrate/pitr';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { markRequired } from '../cli.help';
import { keysFrom } from '../key-files';
import { trustFlags, trustSettings } from '../signing.options';

const schema = z.object({
  from: z.string().min(1, 'the destination URL holding base backups and WAL'),
  key: z.string().min(1, 'the private key file (e.g. ORG.key.asc)'),
  targetDir: z.string().min(1, 'the (empty or new) directory to recover into'),
  toLsn: z.string().optional(),
  toTime: z.string().optional(),
  toXid: z.string().optional(),
  toName: z.string().optional(),
  latest: booleanSetting.optional(),
  immediate: booleanSetting.optional(),
  timeline: z.string().default('latest'),
  inclusive: booleanSetting.default(true),
  action: z.enum(['promote', 'pause', 'shutdown']).default('promote'),
  databaseId: z.string().optional(),
  baseBackup: z.string().optional(),
  start: booleanSetting.default(false),
  port: intSetting(1, 65535).optional(),
  osUser: z.string().optional(),
  archive: booleanSetting.default(false),
  acceptGap: booleanSetting.default(false),
  spoolDepth: intSetting(0, 1024).default(16),
  passphraseEnv: z.string().optional(),
  pgBinDir: z.string().optional(),
  json: z.boolean().optional(),
  ...trustSettings,
});
type Settings = z.infer<typeof schema>;

function targetOf(s: Settings): RecoveryTarget {
  const given: RecoveryTarget[] = [];
  if (s.toLsn !== undefined) {
    if (!isLsn(s.toLsn))
      throw new DbcrateError(ErrorCodes.USAGE, `--to-lsn "${s.toLsn}" is not an LSN`, {
        hint: 'an LSN looks like 0/3000060',
      });
    given.push({ kind: 'lsn', lsn: s.toLsn.toUpperCase() });
  }
  if (s.toTime !== undefined) {
    parseTargetTime(s.toTime);
    given.push({ kind: 'time', time: s.toTime });
  }
  if (s.toXid !== undefined) {
    if (!/^\d+$/.test(s.toXid))
      throw new DbcrateError(ErrorCodes.USAGE, `--to-xid "${s.toXid}" is not a transaction id`);
    given.push({ kind: 'xid', xid: s.toXid });
  }
  if (s.toName !== undefined) given.push({ kind: 'name', name: s.toName });
  if (s.latest) given.push({ kind: 'latest' });
  if (s.immediate) given.push({ kind: 'immediate' });
  if (given.length !== 1) {
    throw new DbcrateError(
      ErrorCodes.USAGE,
      given.length ? 'give only one recovery target' : 'no recovery target given',
      {
        hint: 'choose one of --to-lsn LSN, --to-time TIMESTAMP, --to-xid XID, --to-name NAME, --latest, --immediate',
      },
    );
  }
  return given[0];
}

function timelineOf(v: string): TimelineChoice {
  if (v === 'latest' || v === 'current') return v;
  if (/^\d+$/.test(v) && Number(v) > 0) return Number(v);
  throw new DbcrateError(ErrorCodes.USAGE, `--timeline "${v}" is not valid`, {
    hint: 'use latest, current or a timeline number',
  });
}

export function recoverCommand(): Command {
  return markRequired(
    schema,
    trustFlags(new Command('recover'))
      .description(
        'point-in-time recovery: restore the right base backup into DIR and replay archived WAL to a target',
      )
      .option('--from <DEST_URL>', 'destination URL holding base backups and WAL')
      .option('--key <PRIVKEY_FILE>', 'organisation private key')
      .option('--target-dir <DIR>', 'new or empty directory to recover into')
      .option('--to-lsn <LSN>', 'stop at this WAL location (e.g. 0/3000060)')
      .option('--to-time <TIMESTAMP>', 'stop at this time (ISO 8601 with zone, e.g. 2026-11-25T14:03:12Z)')
      .option('--to-xid <XID>', 'stop at this transaction id')
      .option('--to-name <NAME>', 'stop at a restore point made with pg_create_restore_point()')
      .option('--latest', 'replay all archived WAL')
      .option('--immediate', 'stop as soon as the base backup is consistent')
      .option(
        '--timeline <TLI>',
        'latest | current | N: the timeline to follow (default latest, as PostgreSQL, refused while two timelines grow: then name one; for a point on an older branch give its number)',
      )
      .option('--inclusive', 'stop just after the target (default)')
      .addOption(new Option('--exclusive', 'stop just before the target').implies({ inclusive: false }))
      .option('--action <ACTION>', 'at the target: promote | pause | shutdown (default promote)')
      .option('--database-id <ID>', 'which cluster, when the destination holds several')
      .option('--base-backup <ID>', 'use this base backup instead of choosing one')
      .option('--start', 'start PostgreSQL on DIR and wait until recovery stops at the target')
      .option('--port <N>', 'port of the recovered server (default: a free port)')
      .option('--os-user <USER>', 'OS user to run the server as when dbcrate runs as root (default postgres)')
      .option(
        '--archive',
        'let the recovered server archive WAL as its configuration says (default: archive_mode=off, so a test copy never archives into the production archive)',
      )
      .option('--no-archive', 'archive_mode=off on the recovered server (the default)')
      .option(
        '--accept-gap',
        'with --latest: recover to the end of contiguous WAL although the archive goes on after a gap',
      )
      .option('--passphrase-env <VAR>', 'environment variable holding the private key passphrase')
      .option('--pg-bin-dir <DIR>', 'PostgreSQL server binaries (default /usr/lib/postgresql/<major>/bin)')
      .option('--json', 'print the result as JSON')
      // WAL files fetched ahead into the spool; 0 = none (every file through restore_command: tests)
      .addOption(new Option('--spool-depth <N>').hideHelp())
      .action(async (_o, cmd: Command) => {
        const ctx = contextFor(cmd);
        const s = resolveSettings(schema, { flags: cmd.opts(), file: ctx.file });
        const target = targetOf(s);
        const timeline = timelineOf(s.timeline);
        const r = await recoverCluster({
          openStorage: () => openStorage(s.from),
          from: s.from,
          databaseId: s.databaseId,
          keys: keysFrom({
            key: s.key,
            passphraseEnv: s.passphraseEnv,
            trust: s.trust,
            allowUnsigned: s.allowUnsigned,
          }),
          target,
          timeline,
          backupId: s.baseBackup,
          acceptGap: s.acceptGap,
          targetDir: s.targetDir,
          start: s.start,
          port: s.port,
          osUser: s.osUser,
          archive: s.archive,
          inclusive: s.inclusive,
          action: s.action,
          spoolDepth: s.spoolDepth,
          pgBinDir: s.pgBinDir,
          walFetch: [process.execPath, resolve(process.argv[1]), 'wal-fetch'],
          signal: ctx.signal,
          progress: ctx.progress,
          onPlan: (plan) => {
            const b = plan.backup;
            process.stderr.write(
              `dbcrate: base backup ${b.backupId} (timeline ${b.timeline}, ${b.startLsn} – ${b.stopLsn}); ${plan.window}\n`,
            );
            const gap = plan.acceptedGap;
            if (gap) {
              process.stderr.write(
                `dbcrate: --accept-gap: recovering to the end of contiguous WAL, ${plan.endLsn}; ${gap.firstMissing} is missing ` +
                  `(${gap.missing} file(s)) and the WAL from ${gap.resumesAt} on is not replayed\n`,
              );
            }
          },
        });
        const gap = r.acceptedGap;
        const gapped = gap ? { acceptedGap: gap, endLsn: r.endLsn } : {};
        const dir = r.targetDir;
        if (!r.started) {
          process.stderr.write(
            `dbcrate: warning: restore_command reads ${resolve(s.key)} itself: the server's OS user, and any superuser ` +
              `(pg_read_file), can read the key; --start serves WAL without that\n`,
          );
          const out = {
            databaseId: r.databaseId,
            backupId: r.backupId,
            targetDir: dir,
            started: false,
            ...gapped,
          };
          if (s.json) process.stdout.write(JSON.stringify(out) + '\n');
          else {
            process.stdout.write(
              `restored base backup ${r.backupId} into ${dir}; recovery settings are in postgresql.auto.conf\n`,
            );
            process.stdout.write(`start it with: pg_ctl -D ${dir} start\n`);
          }
          return;
        }
        const outcome = r.outcome!;
        const port = r.port;
        const result = {
          databaseId: r.databaseId,
          backupId: r.backupId,
          targetDir: dir,
          port,
          ...outcome,
          ...gapped,
        };
        if (s.json) process.stdout.write(JSON.stringify(result) + '\n');
        else {
          process.stdout.write(
            `recovered to ${outcome.lsn ? `LSN ${outcome.lsn}` : (outcome.stoppedAt ?? 'the end of the archive')}` +
              `${gap ? ` (the end of contiguous WAL: ${gap.firstMissing} is missing, later WAL not replayed)` : ''}` +
              `${outcome.time ? `, last transaction at ${outcome.time}` : ''}` +
              `${outcome.timeline ? `, now on timeline ${outcome.timeline}` : ''}\n`,
          );
          process.stdout.write(
            outcome.state === 'shut down'
              ? `the server has shut down at the target (${dir})\n`
              : `server ${outcome.state} on port ${port} (data directory ${dir}, log ${outcome.logFile})\n`,
          );
        }
      }),
  );
}
