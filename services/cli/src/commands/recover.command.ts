import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Command, Option } from 'commander';
import { z } from 'zod';
import { booleanSetting, intSetting, resolveSettings } from '@dbcrate/config';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import {
  feedSpool,
  isLsn,
  parseTargetTime,
  PREFETCH_DIR,
  PrefetchSpool,
  planRecovery,
  resolveClusterId,
  restoreBaseBackup,
  shellQuote,
  startRecovery,
  writeRecoveryConfig,
  type RecoveryAction,
  type RecoveryTarget,
  type TimelineChoice,
} from '@dbcrate/pitr';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { loadPrivateKey, trustPaths, trustPolicyFrom } from '../key-files';
import { trustFlags, trustSettings } from '../signing.options';

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
  archive: booleanSetting.default(true),
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
  return trustFlags(new Command('recover'))
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
      'latest | current | N: the timeline to follow (default latest, as PostgreSQL; for a point on an older branch give its number)',
    )
    .option('--inclusive', 'stop just after the target (default)')
    .addOption(new Option('--exclusive', 'stop just before the target').implies({ inclusive: false }))
    .option('--action <ACTION>', 'at the target: promote | pause | shutdown (default promote)')
    .option('--database-id <ID>', 'which cluster, when the destination holds several')
    .option('--base-backup <ID>', 'use this base backup instead of choosing one')
    .option('--start', 'start PostgreSQL on DIR and wait until recovery stops at the target')
    .option('--port <N>', 'port of the recovered server (default: a free port)')
    .option('--os-user <USER>', 'OS user to run the server as when dbcrate runs as root (default postgres)')
    .option('--no-archive', 'set archive_mode=off on the recovered server (a test restore must not archive)')
    .option('--passphrase-env <VAR>', 'environment variable holding the private key passphrase')
    .option('--pg-bin-dir <DIR>', 'PostgreSQL server binaries (default /usr/lib/postgresql/<major>/bin)')
    .option('--json', 'print the result as JSON')
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
          trust,
        });
        const b = plan.backup;
        process.stderr.write(
          `dbcrate: base backup ${b.backupId} (timeline ${b.timeline}, ${b.startLsn} – ${b.stopLsn}); ${plan.window}\n`,
        );

        const binDir = s.pgBinDir ?? `/usr/lib/postgresql/${b.server.major}/bin`;
        const osUser = process.getuid?.() === 0 ? (s.osUser ?? 'postgres') : undefined;
        if (s.start) await checkServerSide(binDir, osUser, keyPath);

        // With --start, WAL is fetched into the prefetch spool while the base backup is still extracting.
        const feeding = new AbortController();
        const onAbort = () => feeding.abort();
        ctx.signal.addEventListener('abort', onAbort, { once: true });
        const owner = s.start && osUser ? await ownerOf(osUser) : undefined;
        let fed: Promise<number> = Promise.resolve(0);
        const startFeeding = () => {
          fed = feedSpool({
            histories: plan.index.timelines,
            spool: new PrefetchSpool(dir),
            fetch: { storage, databaseId, keys: [key], trust },
            walFiles: plan.walFiles,
            known: plan.index.files,
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
            onExtract: s.start ? startFeeding : undefined,
          });

          const fetchArgs = [process.execPath, resolve(process.argv[1]), 'wal-fetch'];
          const tail = ['--from', s.from, '--key', keyPath, '--database-id', databaseId];
          if (s.passphraseEnv) tail.push('--passphrase-env', s.passphraseEnv);
          // restore_command checks WAL signatures as this command does (it runs in the data directory).
          for (const t of trustPaths(s.trust)) tail.push('--trust', resolve(t));
          if (s.allowUnsigned) tail.push('--allow-unsigned');
          // PostgreSQL expands %f/%p/%r anywhere in restore_command, even inside quotes: double every literal %.
          const word = (a: string) => shellQuote(a).replace(/%/g, '%%');
          // With --start this process keeps the prefetch spool filled; the fallback need not prefetch too.
          if (s.start) tail.push('--prefetch', '0');
          // Most WAL files come from the prefetch spool with a rename, history files (asked for
          // more than once) with a copy, and a history file known to be missing is answered at
          // once: no dbcrate process for those. Anything else runs wal-fetch.
          const restoreCommand =
            `f=%f; s=${PREFETCH_DIR}; if [ -e "$s/$f.missing" ]; then exit 1; fi; ` +
            `case "$f" in *.history) cp "$s/$f" %p 2>/dev/null && exit 0;; *) mv -f "$s/$f" %p 2>/dev/null && exit 0;; esac; ` +
            `exec ${fetchArgs.map(word).join(' ')} %f %p ${tail.map(word).join(' ')}`;
          const port = s.start ? (s.port ?? (await freePort())) : s.port;
          const extra: Record<string, string> = {};
          if (port) extra.port = String(port);
          if (!s.archive) extra.archive_mode = 'off';
          const action: RecoveryAction = s.action;
          await writeRecoveryConfig(dir, {
            restoreCommand,
            target,
            timeline,
            inclusive: s.inclusive,
            action,
            extra,
          });

          if (!s.start) {
            const out = { databaseId, backupId: b.backupId, targetDir: dir, started: false };
            if (s.json) process.stdout.write(JSON.stringify(out) + '\n');
            else {
              process.stdout.write(
                `restored base backup ${b.backupId} into ${dir}; recovery settings are in postgresql.auto.conf\n`,
              );
              process.stdout.write(
                `start it with: pg_ctl -D ${dir} start${s.passphraseEnv ? ` (with ${s.passphraseEnv} set in the server's environment)` : ''}\n`,
              );
            }
            return;
          }
          const replay = ctx.progress('replay');
          let seen = 0;
          const outcome = await startRecovery({
            dir,
            binDir,
            port: port!,
            action: target.kind === 'latest' ? 'end' : action,
            osUser,
            signal: ctx.signal,
            onProgress: (n) => {
              if (n > seen) replay.update((n - seen) * b.walSegmentSize);
              seen = n;
            },
          });
          replay.done({ walFilesRestored: outcome.walFilesRestored });
          const result = { databaseId, backupId: b.backupId, targetDir: dir, port, ...outcome };
          if (s.json) process.stdout.write(JSON.stringify(result) + '\n');
          else {
            process.stdout.write(
              `recovered to ${outcome.lsn ? `LSN ${outcome.lsn}` : (outcome.stoppedAt ?? 'the end of the archive')}` +
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
          if (s.start) await new PrefetchSpool(dir).clear();
          ctx.signal.removeEventListener('abort', onAbort);
        }
      } finally {
        await storage.close();
      }
    });
}

/** Before downloading anything: the server binaries exist and the server's user can read the key restore_command uses. */
async function checkServerSide(binDir: string, osUser: string | undefined, keyPath: string): Promise<void> {
  if (!existsSync(join(binDir, 'pg_ctl'))) {
    throw new DbcrateError(ErrorCodes.DB_TOOL_MISSING, `${join(binDir, 'pg_ctl')} does not exist`, {
      hint: "install the PostgreSQL server package of the backup's major version, or pass --pg-bin-dir",
    });
  }
  if (osUser) {
    try {
      await execFileP('runuser', ['-u', osUser, '--', 'test', '-r', keyPath]);
    } catch {
      throw new DbcrateError(
        ErrorCodes.KEY_INVALID,
        `the OS user ${osUser}, who runs the recovered server and its restore_command, cannot read ${keyPath}`,
        {
          hint: `give ${osUser} read access to the key (chown ${osUser} ${keyPath}), or pass --os-user`,
        },
      );
    }
  }
}

async function ownerOf(osUser: string): Promise<{ uid: number; gid: number }> {
  const [{ stdout: uid }, { stdout: gid }] = await Promise.all([
    execFileP('id', ['-u', osUser]),
    execFileP('id', ['-g', osUser]),
  ]);
  return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
}
