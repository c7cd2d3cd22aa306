import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import type { DecryptionKey, KeyProvider, TrustPolicy } from '@dbcrate/crypto';
import type { ProgressSink } from '@dbcrate/plumbing';
import type { Storage } from '@dbcrate/storage';
import { restoreBaseBackup } from './base.backups';
import { resolveClusterId } from './pitr.layout';
import { feedSpool, planRecovery, writeRecoveryConfig, type RecoveryPlan } from './recover';
import type { RecoveryAction, RecoveryTarget, TimelineChoice } from './recover';
import { startRecovery, type RecoveryOutcome } from './recover.start';
import { makeSpoolParent, removeRestoreCommand, restoreCommandFor, serveWal } from './recover.wal';
import { removeTree } from './tree.remove';
import { PrefetchSpool } from './wal.fetch';
import type { WalGap } from './windows';
import type { WalServer } from './wal.serve';

const execFileP = promisify(execFile);

export interface RecoverClusterOptions {
  /** Opens the destination, once the local checks (target, keys) have passed; closed here. */
  openStorage: () => Promise<Storage>;
  /** The destination's URL: a restore_command that fetches WAL itself (no `start`) names it. */
  from: string;
  /** Which cluster, when the destination holds several. */
  databaseId?: string;
  keys: KeyProvider;
  target: RecoveryTarget;
  timeline: TimelineChoice;
  /** Use this base backup instead of choosing one. */
  backupId?: string;
  /** With a `latest` target: recover to the end of contiguous WAL although the archive goes on after a gap. */
  acceptGap?: boolean;
  /** A new or empty directory: nothing is ever recovered over existing files. */
  targetDir: string;
  /** Start PostgreSQL on the directory and wait until recovery stops at the target. */
  start?: boolean;
  /** Port of the recovered server (default with `start`: a free one). */
  port?: number;
  /** OS user to run the server as when running as root (default postgres). */
  osUser?: string;
  /** Let the recovered server archive WAL (default: archive_mode=off). */
  archive?: boolean;
  inclusive?: boolean;
  action?: RecoveryAction;
  /** WAL files fetched ahead into the spool; 0: none. */
  spoolDepth?: number;
  /** PostgreSQL server binaries (default /usr/lib/postgresql/<major>/bin). */
  pgBinDir?: string;
  /** The `dbcrate wal-fetch` command that restore_command runs (program and leading arguments). */
  walFetch: string[];
  signal: AbortSignal;
  progress: (phase: string, total?: number) => ProgressSink;
  /** Told which base backup and WAL the recovery uses, before anything is downloaded. */
  onPlan?: (plan: RecoveryPlan) => void;
}

export interface RecoverClusterResult {
  databaseId: string;
  backupId: string;
  targetDir: string;
  /** Whether the server was started (and recovery ran to its target). */
  started: boolean;
  port?: number;
  /** With `start`: where and how recovery stopped. */
  outcome?: RecoveryOutcome;
  /** With `acceptGap`: the gap recovery stopped at, and the end of contiguous WAL. */
  acceptedGap?: WalGap;
  endLsn?: string;
  /** Without `start`: restore_command reads the key itself (the server's user can read it too). */
  restoreCommandReadsKeys?: boolean;
}

/**
 * Point-in-time recovery: plan (base backup and WAL, from names and manifests only), restore
 * the base backup, write restore_command and the target, and with `start` run the server to
 * the target while this process serves it WAL over a private socket (the server then holds
 * neither key nor passphrase).
 */
export async function recoverCluster(o: RecoverClusterOptions): Promise<RecoverClusterResult> {
  const dir = resolve(o.targetDir);
  // Local checks first: a wrong target or key says so without touching the destination.
  await checkEmptyTarget(dir);
  const trust = await o.keys.trust();
  const keys = await o.keys.decryptionKeys();
  const storage = await o.openStorage();
  try {
    return await recoverFrom(storage, dir, trust, keys, o);
  } finally {
    await storage.close();
  }
}

async function recoverFrom(
  storage: Storage,
  dir: string,
  trust: TrustPolicy,
  keys: DecryptionKey[],
  o: RecoverClusterOptions,
): Promise<RecoverClusterResult> {
  const databaseId = await resolveClusterId(storage, o.databaseId);
  const fetch = { storage, databaseId, keys, trust };
  const plan = await planRecovery({
    storage,
    databaseId,
    target: o.target,
    timeline: o.timeline,
    backupId: o.backupId,
    acceptGap: o.acceptGap,
    trust,
    fetch,
  });
  o.onPlan?.(plan);
  const b = plan.backup;
  const gap = plan.acceptedGap;
  const binDir = o.pgBinDir ?? `/usr/lib/postgresql/${b.server.major}/bin`;
  const osUser = process.getuid?.() === 0 ? (o.osUser ?? 'postgres') : undefined;
  const readerArgs = o.keys.readerArgs();
  if (o.start) checkServerSide(binDir);
  else if (o.keys.secretEnv().length > 0 || !readerArgs) {
    // restore_command would need the passphrase in the server's environment, where any
    // superuser reads it (COPY … FROM PROGRAM 'env'), or keys that exist only here.
    throw new DbcrateError(
      ErrorCodes.USAGE,
      readerArgs
        ? '--passphrase-env needs --start: without it the recovered server would have to hold the passphrase to fetch WAL'
        : 'recovering without starting the server needs key files restore_command can read; these keys exist only in this process',
      {
        hint: 'add --start (recover then serves WAL to the server itself, over a private socket); nothing was downloaded',
      },
    );
  }

  // With start, WAL is fetched into the prefetch spool while the base backup is still extracting.
  const spoolDepth = o.spoolDepth ?? 16;
  const feeding = new AbortController();
  const onAbort = () => feeding.abort();
  o.signal.addEventListener('abort', onAbort, { once: true });
  let walServer: WalServer | undefined;
  let spoolParent: string | undefined;
  let spool: PrefetchSpool | undefined;
  let fed: Promise<number> = Promise.resolve(0);
  try {
    const owner = o.start && osUser ? await ownerOf(osUser) : undefined;
    // As root, the spool must not be in pg_wal: once the data directory is the server's,
    // its user could swap the spool for a symlink and have root write (and chown) files
    // wherever it points. A root-owned parent in the sticky temp dir cannot be swapped.
    spoolParent = owner ? await makeSpoolParent() : undefined;
    const sp = new PrefetchSpool(dir, spoolParent && join(spoolParent, 'spool'));
    spool = sp;
    if (o.start) logger().debug({ spool: sp.dir }, 'prefetch spool');
    const startFeeding = () => {
      fed = feedSpool({
        histories: plan.index.timelines,
        spool: sp,
        fetch,
        walFiles: plan.walFiles,
        known: plan.index.files,
        depth: spoolDepth,
        toEnd: o.target.kind === 'latest',
        owner,
        signal: feeding.signal,
      });
    };
    await restoreBaseBackup({
      storage,
      manifest: b,
      keys,
      targetDir: dir,
      signal: o.signal,
      progress: o.progress,
      onExtract: o.start && spoolDepth > 0 ? startFeeding : undefined,
    });

    if (o.start) walServer = await serveWal({ storage, databaseId, keys, trust, index: plan.index, owner });
    const restoreCommand = restoreCommandFor({
      walFetch: o.walFetch,
      socketDir: walServer?.dir,
      spoolDir: spoolParent && sp.dir,
      from: o.from,
      databaseId,
      readerArgs,
    });
    const port = o.start ? (o.port ?? (await freePort())) : o.port;
    const extra: Record<string, string> = {};
    if (port) extra.port = String(port);
    // A copy archiving into the production archive under the same system identifier forks
    // production's history there; only an explicit archive (a real failover) lets it.
    if (!o.archive) extra.archive_mode = 'off';
    const action: RecoveryAction = o.action ?? 'promote';
    await writeRecoveryConfig(dir, {
      restoreCommand,
      target: o.target,
      // The timeline the plan checked (path, gaps, live branches), not 'latest': a history
      // file archived while the base backup downloads (a copy promoted meanwhile) would
      // otherwise send replay onto a timeline nobody checked.
      timeline: plan.timeline,
      inclusive: o.inclusive ?? true,
      action,
      extra,
    });
    const result: RecoverClusterResult = {
      databaseId,
      backupId: b.backupId,
      targetDir: dir,
      started: false,
      ...(gap ? { acceptedGap: gap, endLsn: plan.endLsn } : {}),
    };
    if (!o.start) return { ...result, restoreCommandReadsKeys: true };

    // Replay progress: bytes of WAL segments replayed of the bytes the plan needs (fixed,
    // known before the start), one segment size per segment PostgreSQL restored.
    const segBytes = b.walSegmentSize;
    const totalBytes = plan.walFiles.length * segBytes;
    const replay = o.progress('replay', totalBytes);
    let replayed = 0;
    const outcome = await startRecovery({
      dir,
      binDir,
      port: port!,
      action: o.target.kind === 'latest' ? 'end' : action,
      osUser,
      signal: o.signal,
      dropEnv: o.keys.secretEnv(),
      // A server that archives runs archive_command, which may need this environment (its
      // signing key, storage credentials): only then does it inherit more than an allowlist.
      fullEnvironment: o.archive,
      onProgress: (_files, segments) => {
        const bytes = Math.min(totalBytes, segments * segBytes);
        if (bytes > replayed) replay.update((replayed = bytes));
      },
    });
    replay.done({ walFilesRestored: outcome.walFilesRestored, segments: plan.walFiles.length });
    if (outcome.state === 'promoted') await removeRestoreCommand(dir);
    checkReachedEnd(plan.walFiles, o.target, outcome, dir);
    return { ...result, started: true, port, outcome };
  } finally {
    // Each step on its own: one that fails must not leave the WAL server (which holds the
    // key) serving, or decrypted WAL behind, and must not hide why the recovery failed.
    feeding.abort();
    o.signal.removeEventListener('abort', onAbort);
    await fed.catch(() => undefined);
    await Promise.allSettled([walServer?.close(), o.start ? spool?.clear() : undefined]);
    if (spoolParent)
      await removeTree(spoolParent).catch((e: unknown) => {
        logger().warn(
          { dir: spoolParent, err: (e as Error).message },
          'could not remove the prefetch spool; remove it by hand',
        );
      });
  }
}

/**
 * A `latest` recovery ends where restore_command first says "not archived". Every WAL file
 * the plan listed is archived, so stopping short means restore_command failed with a status
 * PostgreSQL takes for "missing" (a dbcrate that no longer starts, say, exits 1): the
 * promoted server lacks archived WAL. Success would be a lie.
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

/** Before downloading anything: the server binaries exist. */
function checkServerSide(binDir: string): void {
  if (!existsSync(join(binDir, 'pg_ctl'))) {
    throw new DbcrateError(ErrorCodes.DB_TOOL_MISSING, `${join(binDir, 'pg_ctl')} does not exist`, {
      hint: "install the PostgreSQL server package of the backup's major version, or pass --pg-bin-dir",
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

async function ownerOf(osUser: string): Promise<{ uid: number; gid: number }> {
  const [{ stdout: uid }, { stdout: gid }] = await Promise.all([
    execFileP('id', ['-u', osUser]),
    execFileP('id', ['-g', osUser]),
  ]);
  return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
}
