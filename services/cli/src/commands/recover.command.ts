import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Command, Option } from 'commander';
import { z } from 'zod';
import { booleanSetting, intSetting, resolveSettings } from '@dbcrate/config';
import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import {
  feedSpool,
  isLsn,
  parseTargetTime,
  PrefetchSpool,
  planRecovery,
  removeTree,
  resolveClusterId,
  restoreBaseBackup,
  startRecovery,
  writeRecoveryConfig,
  type RecoveryAction,
  type RecoveryTarget,
  type TimelineChoice,
  type WalServer,
} from '@dbcrate/pitr';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { markRequired } from '../cli.help';
import { loadPrivateKey, trustPolicyFrom } from '../key-files';
import { trustFlags, trustSettings } from '../signing.options';
import { makeSpoolParent, removeRestoreCommand, restoreCommandFor, serveWal } from './recover.wal';

const execFileP = promisify(execFile);

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

async function checkEmptyTarget(dir: string): Promise<void> {
  const entries = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [] as string[];
    throw new DbcrateError(ErrorCodes.TARGET_NOT_EMPTY, `cannot read ${dir}: ${e.code}`);
  });
  if (entries.length > 0) {
    throw new DbcrateError(ErrorCodes.TARGET_NOT_EMPTY, `${dir} is not empty`, {
      hint: 'recover into a new or empty directory; dbcrate never overwrites an existing data directory',
    });
  }
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
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
        const dir = resolve(s.targetDir);
        const keyPath = resolve(s.key);
        await checkEmptyTarget(dir);
        const trust = await trustPolicyFrom(s);
        const key = await loadPrivateKey(keyPath, s.passphraseEnv);
        const storage = await openStorage(s.from);
        try {
          const databaseId = await resolveClusterId(storage, s.databaseId);
          const plan = await planRecovery({
            storage,
            databaseId,
            target,
            timeline,
            backupId: s.baseBackup,
            acceptGap: s.acceptGap,
            trust,
            fetch: { storage, databaseId, keys: [key], trust },
          });
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

          const binDir = s.pgBinDir ?? `/usr/lib/postgresql/${b.server.major}/bin`;
          const osUser = process.getuid?.() === 0 ? (s.osUser ?? 'postgres') : undefined;
          if (s.start) checkServerSide(binDir);
          else if (s.passphraseEnv) {
            // restore_command would need the passphrase in the server's environment, where any
            // superuser reads it (COPY … FROM PROGRAM 'env').
            throw new DbcrateError(
              ErrorCodes.USAGE,
              '--passphrase-env needs --start: without it the recovered server would have to hold the passphrase to fetch WAL',
              {
                hint: 'add --start (recover then serves WAL to the server itself, over a private socket); nothing was downloaded',
              },
            );
          }
          let walServer: WalServer | undefined;

          // With --start, WAL is fetched into the prefetch spool while the base backup is still extracting.
          const feeding = new AbortController();
          const onAbort = () => feeding.abort();
          ctx.signal.addEventListener('abort', onAbort, { once: true });
          const owner = s.start && osUser ? await ownerOf(osUser) : undefined;
          // As root, the spool must not be in pg_wal: once the data directory is the server's,
          // its user could swap the spool for a symlink and have root write (and chown) files
          // wherever it points. A root-owned parent in the sticky temp dir cannot be swapped.
          const spoolParent = owner ? await makeSpoolParent() : undefined;
          const spool = new PrefetchSpool(dir, spoolParent && join(spoolParent, 'spool'));
          if (s.start) logger().debug({ spool: spool.dir }, 'prefetch spool');
          let fed: Promise<number> = Promise.resolve(0);
          const startFeeding = () => {
            fed = feedSpool({
              histories: plan.index.timelines,
              spool,
              fetch: { storage, databaseId, keys: [key], trust },
              walFiles: plan.walFiles,
              known: plan.index.files,
              depth: s.spoolDepth,
              toEnd: target.kind === 'latest',
              owner,
              signal: feeding.signal,
            });
          };
          try {
            await restoreBaseBackup({
              storage,
              manifest: b,
              keys: [key],
              targetDir: dir,
              signal: ctx.signal,
              progress: ctx.progress,
              onExtract: s.start && s.spoolDepth > 0 ? startFeeding : undefined,
            });

            // With --start, this process serves WAL over a private socket and the server gets
            // neither the passphrase nor the need to read the key.
            if (s.start)
              walServer = await serveWal({ storage, databaseId, key, trust, index: plan.index, owner });
            const restoreCommand = restoreCommandFor({
              socketDir: walServer?.dir,
              spoolDir: spoolParent && spool.dir,
              from: s.from,
              keyPath,
              databaseId,
              trust: s.trust,
              allowUnsigned: s.allowUnsigned,
            });
            const port = s.start ? (s.port ?? (await freePort())) : s.port;
            const extra: Record<string, string> = {};
            if (port) extra.port = String(port);
            // A copy archiving into the production archive under the same system identifier forks
            // production's history there; only an explicit --archive (a real failover) lets it.
            if (!s.archive) extra.archive_mode = 'off';
            const action: RecoveryAction = s.action;
            await writeRecoveryConfig(dir, {
              restoreCommand,
              target,
              // The timeline the plan checked (path, gaps, live branches), not 'latest': a history
              // file archived while the base backup downloads (a copy promoted meanwhile) would
              // otherwise send replay onto a timeline nobody checked.
              timeline: plan.timeline,
              inclusive: s.inclusive,
              action,
              extra,
            });

            if (!s.start) {
              process.stderr.write(
                `dbcrate: warning: restore_command reads ${keyPath} itself: the server's OS user, and any superuser ` +
                  `(pg_read_file), can read the key; --start serves WAL without that\n`,
              );
              const out = {
                databaseId,
                backupId: b.backupId,
                targetDir: dir,
                started: false,
                ...(gap ? { acceptedGap: gap, endLsn: plan.endLsn } : {}),
              };
              if (s.json) process.stdout.write(JSON.stringify(out) + '\n');
              else {
                process.stdout.write(
                  `restored base backup ${b.backupId} into ${dir}; recovery settings are in postgresql.auto.conf\n`,
                );
                process.stdout.write(`start it with: pg_ctl -D ${dir} start\n`);
              }
              return;
            }
            // Replay progress: bytes of WAL segments replayed of the bytes the plan needs (fixed,
            // known before the start), one segment size per segment PostgreSQL restored.
            const segBytes = b.walSegmentSize;
            const totalBytes = plan.walFiles.length * segBytes;
            const replay = ctx.progress('replay', totalBytes);
            let replayed = 0;
            const outcome = await startRecovery({
              dir,
              binDir,
              port: port!,
              action: target.kind === 'latest' ? 'end' : action,
              osUser,
              signal: ctx.signal,
              dropEnv: s.passphraseEnv ? [s.passphraseEnv] : [],
              // A server that archives runs archive_command, which may need this environment (its
              // signing key, storage credentials): only then does it inherit more than an allowlist.
              fullEnvironment: s.archive,
              onProgress: (_files, segments) => {
                const bytes = Math.min(totalBytes, segments * segBytes);
                if (bytes > replayed) replay.update((replayed = bytes));
              },
            });
            replay.done({ walFilesRestored: outcome.walFilesRestored, segments: plan.walFiles.length });
            if (outcome.state === 'promoted') await removeRestoreCommand(dir);
            checkReachedEnd(plan.walFiles, target, outcome, dir);
            const result = {
              databaseId,
              backupId: b.backupId,
              targetDir: dir,
              port,
              ...outcome,
              ...(gap ? { acceptedGap: gap, endLsn: plan.endLsn } : {}),
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
          } finally {
            feeding.abort();
            await fed.catch(() => undefined);
            if (s.start) await spool.clear();
            if (spoolParent) await removeTree(spoolParent);
            await walServer?.close();
            ctx.signal.removeEventListener('abort', onAbort);
          }
        } finally {
          await storage.close();
        }
      }),
  );
}

/**
 * --latest ends where restore_command first says "not archived". Every WAL file the plan
 * listed is archived, so stopping short means restore_command failed with a status PostgreSQL
 * takes for "missing" (a dbcrate that no longer starts, say, exits 1): the promoted server
 * lacks archived WAL. Exit 0 would be a lie.
 */
export function checkReachedEnd(
  walFiles: string[],
  target: RecoveryTarget,
  outcome: { lastSegmentRestored?: string; logFile?: string },
  dir: string,
): void {
  const last = walFiles[walFiles.length - 1];
  if (target.kind !== 'latest' || !last) return;
  const reached = outcome.lastSegmentRestored;
  if (reached && reached.slice(8) >= last.slice(8)) return;
  throw new DbcrateError(
    ErrorCodes.RECOVERY_FAILED,
    `replay ended at ${reached ?? 'the base backup'}, short of ${last}, the end of the contiguous archived WAL: the server in ${dir} was promoted without WAL that is archived`,
    {
      hint: `do not use that server; see why restore_command failed in ${outcome.logFile ?? 'the server log'}, then recover again into a new directory`,
    },
  );
}

/** Before downloading anything: the server binaries exist. */
function checkServerSide(binDir: string): void {
  if (!existsSync(join(binDir, 'pg_ctl'))) {
    throw new DbcrateError(ErrorCodes.DB_TOOL_MISSING, `${join(binDir, 'pg_ctl')} does not exist`, {
      hint: "install the PostgreSQL server package of the backup's major version, or pass --pg-bin-dir",
    });
  }
}

async function ownerOf(osUser: string): Promise<{ uid: number; gid: number }> {
  const [{ stdout: uid }, { stdout: gid }] = await Promise.all([
    execFileP('id', ['-u', osUser]),
    execFileP('id', ['-g', osUser]),
  ]);
  return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
}
