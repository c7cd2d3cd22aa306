import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import type { Storage } from '@dbcrate/storage';
import type { TrustPolicy } from '@dbcrate/crypto';
import { usableBaseBackups } from './base.backups';
import type { BaseManifest } from './base.manifest';
import { fetchWal, fetchWalObject, PREFETCH_DIR, PrefetchSpool, type WalFetchOptions } from './wal.fetch';
import {
  DEFAULT_WAL_SEGMENT_SIZE,
  formatLsn,
  historyFileName,
  parseLsn,
  segmentNumber,
  segmentOfLsn,
  walFileName,
} from './wal.names';
import {
  backupOnPath,
  describeWindow,
  indexArchive,
  timelineForSegment,
  timelinePath,
  walReach,
  windowsFromIndex,
  type WalIndex,
} from './windows';

const execFileP = promisify(execFile);

export type RecoveryTarget =
  | { kind: 'lsn'; lsn: string }
  | { kind: 'time'; time: string }
  | { kind: 'xid'; xid: string }
  | { kind: 'name'; name: string }
  | { kind: 'latest' }
  | { kind: 'immediate' };

export type TimelineChoice = 'latest' | 'current' | number;
export type RecoveryAction = 'promote' | 'pause' | 'shutdown';

/** Parse a --to-time value; keep the text as given (PostgreSQL parses it, to the microsecond). */
export function parseTargetTime(text: string): Date {
  // PostgreSQL's own output ("2026-11-25 14:03:12.250123+00") has a space and an hour-only offset.
  const iso = text
    .trim()
    .replace(/^(\d{4}-\d{2}-\d{2}) (\d)/, '$1T$2')
    .replace(/([+-]\d{2})$/, '$1:00');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) {
    throw new DbcrateError(ErrorCodes.USAGE, `"${text}" is not a timestamp`, {
      hint: 'use ISO 8601 with a time zone, e.g. 2026-11-25T14:03:12.250Z or "2026-11-25 14:03:12.250123+00"',
    });
  }
  return d;
}

export interface RecoveryPlan {
  databaseId: string;
  backup: BaseManifest;
  /** The timeline recovery follows (what recovery_target_timeline resolves to). */
  timeline: number;
  window: string;
  index: WalIndex;
  /** The WAL files replay will ask for, in order: from the backup's start to the target (or the end of the archive). */
  walFiles: string[];
}

function outOfWindow(message: string, windows: string[], hint?: string): DbcrateError {
  return new DbcrateError(
    ErrorCodes.OUT_OF_WINDOW,
    `${message}; ${windows.length ? windows.join('; ') : 'there is no complete base backup'}`,
    { hint: hint ?? 'run `dbcrate windows --from DEST` for the full picture; nothing was downloaded' },
  );
}

/**
 * Choose the newest base backup that can reach `target` on the chosen timeline, and check
 * that the WAL in between is archived without a hole — all from object names and
 * manifests, before anything is downloaded.
 */
export async function planRecovery(opts: {
  storage: Storage;
  databaseId: string;
  target: RecoveryTarget;
  timeline: TimelineChoice;
  backupId?: string;
  /** Signers to trust: untrusted base backups are refused (E_UNTRUSTED) or skipped. */
  trust?: TrustPolicy;
}): Promise<RecoveryPlan> {
  const backups = await usableBaseBackups(opts.storage, opts.databaseId, {
    trust: opts.trust,
    backupId: opts.backupId,
  });
  const segSize = backups[0]?.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
  const index = await indexArchive(opts.storage, opts.databaseId, segSize);
  const all = windowsFromIndex(index, backups);
  const windowText = all.timelines.map(describeWindow);
  if (backups.length === 0)
    throw outOfWindow(`no complete base backup for database id "${opts.databaseId}"`, []);

  const latestTli = Math.max(...index.timelines, ...backups.map((b) => b.timeline));
  const candidates = [...backups].reverse().filter((b) => !opts.backupId || b.backupId === opts.backupId);
  if (candidates.length === 0) {
    throw new DbcrateError(
      ErrorCodes.SNAPSHOT_NOT_FOUND,
      `no complete base backup ${opts.backupId} for "${opts.databaseId}"`,
    );
  }
  const t = opts.target;
  const targetLsn = t.kind === 'lsn' ? parseLsn(t.lsn) : undefined;
  const targetTime = t.kind === 'time' ? parseTargetTime(t.time) : undefined;

  for (const b of candidates) {
    const tli =
      opts.timeline === 'latest' ? latestTli : opts.timeline === 'current' ? b.timeline : opts.timeline;
    const path = timelinePath(index, tli);
    if (!backupOnPath(b, path)) continue;
    if (targetLsn !== undefined && parseLsn(b.stopLsn) > targetLsn) continue;
    if (targetTime !== undefined && new Date(b.finishedAt) > targetTime) continue;

    const reach = walReach(index, path, segmentNumber(b.startWalFile, segSize));
    const window = windowsFromIndex(index, [b]).timelines.find((w) => w.timeline === tli);
    const windowDesc = window ? describeWindow(window) : `timeline ${tli}`;
    if (reach.endLsn <= parseLsn(b.stopLsn)) {
      throw outOfWindow(
        `the WAL that base backup ${b.backupId} needs to become consistent (up to ${b.stopLsn}, ${b.stopWalFile}) is not all archived` +
          (reach.gaps[0] ? ` (${reach.gaps[0].firstMissing} is missing)` : ''),
        windowText,
        'check that archive_command runs `dbcrate wal-push` and succeeds (pg_stat_archiver), then retry',
      );
    }
    const gapNote = reach.gaps.length
      ? ` (WAL gap: ${reach.gaps[0].firstMissing} is missing from the archive)`
      : '';
    if (targetLsn !== undefined && targetLsn > reach.endLsn) {
      throw outOfWindow(
        `target LSN ${t.kind === 'lsn' ? t.lsn : ''} is past the end of the archived WAL${gapNote}`,
        [windowDesc],
      );
    }
    if (targetTime !== undefined) {
      const end = reach.lastFile?.lastModified;
      if (end && targetTime > end) {
        throw outOfWindow(
          `target time ${targetTime.toISOString()} is after the last archived WAL${gapNote}`,
          [windowDesc],
        );
      }
    }
    if (reach.gaps.length && (t.kind === 'latest' || t.kind === 'xid' || t.kind === 'name')) {
      logger().warn(
        { gap: reach.gaps[0] },
        `the archive has a WAL gap; recovery cannot go past ${formatLsn(reach.endLsn)}`,
      );
    }
    const startSeg = segmentNumber(b.startWalFile, segSize);
    const lastSeg =
      targetLsn !== undefined ? segmentOfLsn(targetLsn, segSize) : segmentOfLsn(reach.endLsn - 1n, segSize);
    const walFiles: string[] = [];
    for (let seg = startSeg; seg <= lastSeg; seg++) {
      walFiles.push(walFileName(timelineForSegment(path, seg, segSize), seg, segSize));
    }
    return { databaseId: opts.databaseId, backup: b, timeline: tli, window: windowDesc, index, walFiles };
  }
  const what =
    t.kind === 'lsn'
      ? `LSN ${t.lsn}`
      : t.kind === 'time'
        ? `time ${t.time}`
        : `timeline ${String(opts.timeline)}`;
  throw outOfWindow(
    `no base backup can reach ${what}${opts.timeline !== 'latest' ? ` on timeline ${String(opts.timeline)}` : ''}`,
    windowText,
  );
}

/** PostgreSQL reads ISO 8601, but not a trailing "Z" for UTC: write it as +00 (precision kept as given). */
export function postgresTimestamp(text: string): string {
  return text.trim().replace(/[zZ]$/, '+00');
}

/** A value inside single quotes in postgresql.conf. */
function confQuote(v: string): string {
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** A shell word (restore_command runs through sh -c). */
export function shellQuote(v: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`;
}

export interface RecoverySettings {
  restoreCommand: string;
  target: RecoveryTarget;
  timeline: TimelineChoice;
  inclusive: boolean;
  action: RecoveryAction;
  /** Extra settings for the recovered server (port, archive_mode=off, …). */
  extra?: Record<string, string>;
}

/** recovery.signal plus the recovery settings, appended to postgresql.auto.conf (which wins over postgresql.conf). */
export async function writeRecoveryConfig(dir: string, s: RecoverySettings): Promise<void> {
  const lines = [
    '',
    `# written by dbcrate recover, ${new Date().toISOString()}`,
    `restore_command = ${confQuote(s.restoreCommand)}`,
    `recovery_target_timeline = ${confQuote(String(s.timeline))}`,
  ];
  const t = s.target;
  if (t.kind === 'lsn') lines.push(`recovery_target_lsn = ${confQuote(t.lsn)}`);
  if (t.kind === 'time') lines.push(`recovery_target_time = ${confQuote(postgresTimestamp(t.time))}`);
  if (t.kind === 'xid') lines.push(`recovery_target_xid = ${confQuote(t.xid)}`);
  if (t.kind === 'name') lines.push(`recovery_target_name = ${confQuote(t.name)}`);
  if (t.kind === 'immediate') lines.push(`recovery_target = 'immediate'`);
  if (t.kind !== 'latest') {
    lines.push(`recovery_target_inclusive = ${s.inclusive ? 'on' : 'off'}`);
    lines.push(`recovery_target_action = ${confQuote(s.action)}`);
  }
  for (const [k, v] of Object.entries(s.extra ?? {})) lines.push(`${k} = ${confQuote(v)}`);
  await appendFile(join(dir, 'postgresql.auto.conf'), lines.join('\n') + '\n', { mode: 0o600 });
  await writeFile(join(dir, 'recovery.signal'), '', { mode: 0o600 });
  // A data directory from a Debian-managed cluster has its configuration in /etc; give it a minimal one.
  if (!existsSync(join(dir, 'postgresql.conf'))) {
    await writeFile(
      join(dir, 'postgresql.conf'),
      "# written by dbcrate recover (the backup had none)\nlisten_addresses = 'localhost'\n",
      { mode: 0o600 },
    );
  }
  if (!existsSync(join(dir, 'pg_hba.conf'))) {
    await writeFile(
      join(dir, 'pg_hba.conf'),
      'local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n',
      { mode: 0o600 },
    );
  }
}

export interface RecoveryOutcome {
  state: 'promoted' | 'paused' | 'shut down';
  /** Where replay stopped: "redo done at" (promote), else the stop record's description. */
  lsn?: string;
  /** Time of the last transaction replayed, or of the stop record. */
  time?: string;
  stoppedAt?: string;
  timeline?: number;
  walFilesRestored: number;
  logFile: string;
}

/** What PostgreSQL's log says about a recovery, line by line. */
export function readRecoveryLog(text: string): {
  outcome: Omit<RecoveryOutcome, 'state' | 'logFile'>;
  promoted: boolean;
  paused: boolean;
  shutdown: boolean;
  failed?: string;
  lastFatal?: string;
  exited: boolean;
} {
  const o: Omit<RecoveryOutcome, 'state' | 'logFile'> = { walFilesRestored: 0 };
  let promoted = false;
  let paused = false;
  let shutdown = false;
  let exited = false;
  let lastFatal: string | undefined;
  for (const line of text.split('\n')) {
    let m: RegExpExecArray | null;
    if (/restored log file ".*" from archive/.test(line)) o.walFilesRestored++;
    if ((m = /recovery stopping (.*)$/.exec(line))) {
      o.stoppedAt = m[1];
      const time = /, time (.+)$/.exec(m[1]);
      if (time) o.time = time[1];
      const lsn = /WAL location \(LSN\) "([0-9A-F]+\/[0-9A-F]+)"/.exec(m[1]);
      if (lsn) o.lsn = lsn[1];
    }
    if ((m = /redo done at ([0-9A-F]+\/[0-9A-F]+)/.exec(line))) o.lsn = m[1];
    if ((m = /last completed transaction was at log time (.+)$/.exec(line))) o.time = m[1];
    if ((m = /selected new timeline ID: (\d+)/.exec(line))) o.timeline = Number(m[1]);
    if (/database system is ready to accept connections/.test(line)) promoted = true;
    if (/pausing at the end of recovery|recovery has paused/.test(line)) paused = true;
    if (/shutdown at recovery target/.test(line)) shutdown = true;
    if ((m = /(?:FATAL|PANIC):\s+(.*)$/.exec(line))) {
      if (!/the database system is (starting up|not yet accepting connections|in recovery mode)/.test(m[1]))
        lastFatal = m[1];
    }
    if (/database system is shut down|startup process \(PID \d+\) exited with exit code/.test(line))
      exited = true;
  }
  const failed = exited && !shutdown ? (lastFatal ?? 'the server stopped during recovery') : undefined;
  return { outcome: o, promoted, paused, shutdown, failed, lastFatal, exited };
}

/** postmaster.pid exists and names a live process (pg_ctl -W returns before the server is up, so allow a moment). */
async function postmasterAlive(dir: string): Promise<boolean> {
  for (let i = 0; i < 20; i++) {
    const text = await readFile(join(dir, 'postmaster.pid'), 'utf8').catch(() => '');
    const pid = Number(text.split('\n')[0]);
    if (pid > 0) {
      try {
        process.kill(pid, 0);
        return true;
      } catch (e) {
        return (e as NodeJS.ErrnoException).code === 'EPERM';
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

function asUser(osUser: string | undefined, cmd: string, args: string[]): [string, string[]] {
  return osUser ? ['runuser', ['-u', osUser, '--', cmd, ...args]] : [cmd, args];
}

export async function chownTree(dir: string, osUser: string): Promise<void> {
  await execFileP('chown', ['-R', `${osUser}:${osUser}`, dir]);
}

/**
 * Start PostgreSQL on the recovered directory and follow its log until recovery has
 * stopped at the target (promoted, paused or shut down) or failed.
 */
export async function startRecovery(opts: {
  dir: string;
  binDir: string;
  port: number;
  action: RecoveryAction | 'end';
  osUser?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  onProgress?: (walFilesRestored: number) => void;
}): Promise<RecoveryOutcome> {
  const logDir = join(opts.dir, 'log');
  await mkdir(logDir, { recursive: true, mode: 0o700 });
  const logFile = join(logDir, 'dbcrate-recover.log');
  await writeFile(logFile, '', { mode: 0o600 });
  if (opts.osUser) await chownTree(opts.dir, opts.osUser);
  const serverOpts = `-p ${opts.port} -c logging_collector=off -c log_destination=stderr -c unix_socket_directories=/tmp`;
  const [cmd, args] = asUser(opts.osUser, join(opts.binDir, 'pg_ctl'), [
    '-D',
    opts.dir,
    '-l',
    logFile,
    '-o',
    serverOpts,
    '-W',
    'start',
  ]);
  await new Promise<void>((res, rej) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', rej);
    p.on('close', (code) =>
      code === 0
        ? res()
        : rej(new DbcrateError(ErrorCodes.RECOVERY_FAILED, `pg_ctl start failed: ${err.trim()}`)),
    );
  });
  const deadline = Date.now() + (opts.timeoutMs ?? 24 * 3600_000);
  for (;;) {
    const text = await readFile(logFile, 'utf8').catch(() => '');
    const r = readRecoveryLog(text);
    opts.onProgress?.(r.outcome.walFilesRestored);
    if (r.failed) {
      throw new DbcrateError(ErrorCodes.RECOVERY_FAILED, `recovery failed: ${r.failed}`, {
        hint: `the server log is ${logFile}`,
      });
    }
    const done =
      (opts.action === 'pause' && r.paused) ||
      (opts.action === 'shutdown' && r.shutdown && r.exited) ||
      ((opts.action === 'promote' || opts.action === 'end') && r.promoted);
    if (done) {
      const state = r.promoted ? 'promoted' : r.paused ? 'paused' : 'shut down';
      await rm(join(opts.dir, PREFETCH_DIR), { recursive: true, force: true }).catch(() => undefined);
      return { ...r.outcome, state, logFile };
    }
    // A server that dies without logging a shutdown (a configuration error, say) must not be waited for.
    if (!(await postmasterAlive(opts.dir))) {
      const again = readRecoveryLog(await readFile(logFile, 'utf8').catch(() => ''));
      if (!again.promoted && !again.paused && !again.shutdown) {
        throw new DbcrateError(
          ErrorCodes.RECOVERY_FAILED,
          `the server stopped: ${again.lastFatal ?? 'no reason logged'}`,
          {
            hint: `the server log is ${logFile}`,
          },
        );
      }
      continue;
    }
    if (opts.signal?.aborted) {
      throw new DbcrateError(
        ErrorCodes.INTERRUPTED,
        `interrupted; the server on ${opts.dir} keeps running (pg_ctl -D ${opts.dir} stop)`,
      );
    }
    if (Date.now() > deadline) {
      throw new DbcrateError(ErrorCodes.RECOVERY_FAILED, 'recovery did not reach its target in time', {
        hint: `see ${logFile}`,
      });
    }
    await new Promise((r2) => setTimeout(r2, 250));
  }
}

/**
 * While `recover --start` waits for replay, keep the prefetch spool `depth` files ahead,
 * `parallel` downloads at a time. restore_command takes a file from the spool with a plain
 * rename (`mv`), so most WAL files cost PostgreSQL no dbcrate process at all.
 */
export async function feedSpool(opts: {
  spool: PrefetchSpool;
  fetch: WalFetchOptions;
  walFiles: string[];
  depth?: number;
  parallel?: number;
  /** uid/gid that must own spool files (the server's OS user) when we run as root. */
  owner?: { uid: number; gid: number };
  /** Timelines in the archive: their history files go into the spool first, and the next one is marked missing. */
  histories?: number[];
  /** Object keys already listed (the plan's index): no listing per WAL file. */
  known?: Map<string, { key: string; sha256: string }>;
  signal: AbortSignal;
}): Promise<number> {
  const depth = opts.depth ?? 16;
  if (opts.histories) await stageHistories(opts);
  let next = 0;
  let fetched = 0;
  const held = async () =>
    (await readdir(opts.spool.dir).catch(() => [] as string[])).filter(
      (f) => !f.startsWith('.') && !f.endsWith('.dbcrate-tmp'),
    ).length;
  const worker = async () => {
    while (!opts.signal.aborted && next < opts.walFiles.length) {
      while (!opts.signal.aborted && (await held()) >= depth) await new Promise((r) => setTimeout(r, 50));
      if (opts.signal.aborted) return;
      const name = opts.walFiles[next++];
      try {
        const known = opts.known?.get(name);
        const data = known
          ? await fetchWalObject({ ...opts.fetch, signal: opts.signal }, name, known.key, known.sha256)
          : await fetchWal({ ...opts.fetch, signal: opts.signal }, name);
        await opts.spool.put(name, data, opts.owner);
        fetched++;
      } catch (e) {
        if (opts.signal.aborted) return;
        // restore_command fetches it itself (and reports the error, if it is one).
        logger().debug({ walFile: name, err: (e as Error).message }, 'prefetch stopped');
        next = opts.walFiles.length;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.parallel ?? 2) }, worker));
  return fetched;
}

/**
 * PostgreSQL asks for history files several times (at start, and when it picks a new
 * timeline at the end) and probes for the one after the newest, which does not exist.
 * Stage the existing ones (tiny) and a "missing" marker for the next, so that none of
 * those requests needs a dbcrate process.
 */
async function stageHistories(opts: Parameters<typeof feedSpool>[0]): Promise<void> {
  const timelines = opts.histories ?? [];
  const newest = Math.max(1, ...timelines);
  for (const tli of timelines) {
    if (tli < 2 || opts.signal.aborted) continue;
    const name = historyFileName(tli);
    const known = opts.known?.get(name);
    if (!known) continue;
    const data = await fetchWalObject(opts.fetch, name, known.key, known.sha256);
    await opts.spool.put(name, data, opts.owner);
  }
  await opts.spool.put(`${historyFileName(newest + 1)}.missing`, new Uint8Array(0), opts.owner);
}
