import { existsSync } from 'node:fs';
import { appendFile, lstat, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import type { Storage } from '@dbcrate/storage';
import type { TrustPolicy } from '@dbcrate/crypto';
import { usableBaseBackups } from './base.backups';
import { useSignedHistories } from './recover.histories';
import type { BaseManifest } from './base.manifest';
import { describeLiveBranches, liveBranches } from './timeline.branches';
import { fetchWal, fetchWalObject, PrefetchSpool, type WalFetchOptions } from './wal.fetch';
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
  type WalGap,
  type WalIndex,
} from './windows';

export type RecoveryTarget =
  | { kind: 'lsn'; lsn: string }
  | { kind: 'time'; time: string }
  | { kind: 'xid'; xid: string }
  | { kind: 'name'; name: string }
  | { kind: 'latest' }
  | { kind: 'immediate' };

export type TimelineChoice = 'latest' | 'current' | number;
export type RecoveryAction = 'promote' | 'pause' | 'shutdown';

/** Date and time, then a zone: Z, ±HH, ±HHMM or ±HH:MM (what PostgreSQL and ISO 8601 print). */
const ZONED_TIME = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$/;

/**
 * Parse a --to-time value; keep the text as given (PostgreSQL parses it, to the microsecond).
 * A time without a zone is refused: the planner would read it in the caller's TZ and
 * PostgreSQL in the server's timezone setting, two different instants.
 */
export function parseTargetTime(text: string): Date {
  const trimmed = text.trim();
  const hint =
    'use ISO 8601 with a time zone, e.g. 2026-11-25T14:03:12.250Z or "2026-11-25 14:03:12.250123+00"';
  if (/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?$/.test(trimmed)) {
    throw new DbcrateError(ErrorCodes.USAGE, `"${text}" has no time zone`, {
      hint: `${hint}; a zone-less time would be read in one zone here and in another by the server`,
    });
  }
  if (!ZONED_TIME.test(trimmed)) {
    throw new DbcrateError(ErrorCodes.USAGE, `"${text}" is not a timestamp with a time zone`, { hint });
  }
  // PostgreSQL's own output ("2026-11-25 14:03:12.250123+00") has a space and an hour-only offset.
  const iso = trimmed
    .replace(/^(\d{4}-\d{2}-\d{2}) (\d)/, '$1T$2')
    .replace(/\s+([zZ+-])/, '$1')
    .replace(/([+-]\d{2})$/, '$1:00')
    .replace(/([+-]\d{2})(\d{2})$/, '$1:$2');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) {
    throw new DbcrateError(ErrorCodes.USAGE, `"${text}" is not a timestamp`, { hint });
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
  /** End of contiguous archived WAL on the path (LSN). */
  endLsn: string;
  /** With --accept-gap and --latest: the gap recovery stops at. */
  acceptedGap?: WalGap;
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
export async function planRecovery(opts: PlanOptions & { storage: Storage }): Promise<RecoveryPlan> {
  const backups = await usableBaseBackups(opts.storage, opts.databaseId, {
    trust: opts.trust,
    backupId: opts.backupId,
  });
  const segSize = backups[0]?.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
  const index = await indexArchive(opts.storage, opts.databaseId, segSize);
  if (opts.fetch) await useSignedHistories(index, opts.fetch);
  return planFromIndex(index, backups, opts);
}

export interface PlanOptions {
  databaseId: string;
  target: RecoveryTarget;
  timeline: TimelineChoice;
  backupId?: string;
  /** --accept-gap: recover to the end of contiguous WAL although the archive goes on after a gap. */
  acceptGap?: boolean;
  /** Signers to trust: untrusted base backups are refused (E_UNTRUSTED) or skipped. */
  trust?: TrustPolicy;
  /** To read the signed .history files (planRecovery): the plan then ignores the unsigned timeline summaries. */
  fetch?: WalFetchOptions;
}

/** planRecovery on what was listed: pure, so every refusal can be tested without storage. */
export function planFromIndex(index: WalIndex, backups: BaseManifest[], opts: PlanOptions): RecoveryPlan {
  const segSize = index.segmentSize;
  const all = windowsFromIndex(index, backups);
  const windowText = all.timelines.map(describeWindow);
  if (backups.length === 0)
    throw outOfWindow(`no complete base backup for database id "${opts.databaseId}"`, []);

  const latestTli = Math.max(...index.timelines, ...backups.map((b) => b.timeline));
  // --timeline latest follows the newest timeline; when another one kept growing after it
  // forked (a recovered copy archiving here, or an old primary still running), that could be
  // the wrong one. Only the user knows which: ask for it.
  if (opts.timeline === 'latest') {
    const live = liveBranches(index, latestTli);
    if (live.length) {
      throw new DbcrateError(
        ErrorCodes.TIMELINE_BRANCHES,
        `${describeLiveBranches(live)}; --timeline latest would follow timeline ${latestTli}`,
        {
          hint: `choose one: ${[...new Set([latestTli, ...live.map((b) => b.other)])].map((t) => `--timeline ${t}`).join(' or ')} (\`dbcrate windows\` shows both); nothing was downloaded`,
        },
      );
    }
  }
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
    // Replay stops at the first record at or after the target: that record must be archived
    // too, so a target equal to the end of contiguous WAL cannot be reached either.
    if (targetLsn !== undefined && targetLsn >= reach.endLsn) {
      throw outOfWindow(
        `target LSN ${t.kind === 'lsn' ? t.lsn : ''} is ${targetLsn === reach.endLsn ? 'at' : 'past'} the end of the contiguous archived WAL (${formatLsn(reach.endLsn)}); replay needs the WAL record at the target${gapNote}`,
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
    // --latest across a gap would end at the gap and report success: the WAL after it is lost
    // to this recovery. Only an explicit --accept-gap takes the end of contiguous WAL.
    if (reach.gaps.length && t.kind === 'latest' && !opts.acceptGap) {
      const g = reach.gaps[0];
      throw new DbcrateError(
        ErrorCodes.WAL_GAP,
        `WAL gap on timeline ${g.timeline}: ${g.firstMissing} is missing (${g.missing} file(s); the archive resumes at ${g.resumesAt}); ` +
          `--latest can only reach ${formatLsn(reach.endLsn)}${reach.lastFile ? ` (${reach.lastFile.name}${reach.lastFile.lastModified ? `, stored ${reach.lastFile.lastModified.toISOString()}` : ''})` : ''}; ${windowDesc}`,
        {
          hint: 'pass --accept-gap to recover to the end of contiguous WAL, or give a target before the gap; nothing was downloaded',
        },
      );
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
    // The index keeps one object per name; with two (two servers archived here), replay would
    // take whichever was listed last, maybe the other server's history.
    const needed = [...walFiles, ...path.slice(1).map((p) => historyFileName(p.timeline))];
    const clash = needed.filter((n) => index.conflicts.includes(n));
    if (clash.length) {
      throw new DbcrateError(
        ErrorCodes.WAL_CONFLICT,
        `${clash[0]} is archived more than once with different content${clash.length > 1 ? ` (and ${clash.length - 1} more WAL file(s) of this recovery)` : ''}; replay would take one copy at random`,
        {
          hint: `two servers archived to database id "${opts.databaseId}" (\`dbcrate windows\` lists the conflicts); keep the right object and delete the other, or choose a target before it; nothing was downloaded`,
        },
      );
    }
    return {
      databaseId: opts.databaseId,
      backup: b,
      timeline: tli,
      window: windowDesc,
      index,
      walFiles,
      endLsn: formatLsn(reach.endLsn),
      acceptedGap: t.kind === 'latest' && opts.acceptGap ? reach.gaps[0] : undefined,
    };
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
  // recover may run as root: never write through a symlink the base backup brought along.
  for (const f of ['postgresql.auto.conf', 'recovery.signal', 'postgresql.conf', 'pg_hba.conf']) {
    if ((await lstat(join(dir, f)).catch(() => undefined))?.isSymbolicLink()) {
      throw new DbcrateError(
        ErrorCodes.INTEGRITY,
        `${join(dir, f)} is a symlink; refusing to write through it`,
        {
          hint: 'PostgreSQL keeps these files in the data directory; the base backup was tampered with',
        },
      );
    }
  }
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
  /**
   * Recovery to the end of the planned WAL (--latest): its last segment is kept after it
   * is taken, since PostgreSQL reads it again when it starts the new timeline. (The one
   * after it is not marked missing: WAL archived while the backup restores is replayed.)
   */
  toEnd?: boolean;
  signal: AbortSignal;
}): Promise<number> {
  const depth = opts.depth ?? 16;
  if (opts.histories) await stageHistories(opts);
  const last = opts.walFiles.at(-1);
  if (opts.toEnd && last) await opts.spool.put(`${last}.keep`, new Uint8Array(0), opts.owner);
  let next = 0;
  let fetched = 0;
  // Markers (.missing, .keep) are not WAL held.
  const held = async () =>
    (await readdir(opts.spool.dir).catch(() => [] as string[])).filter(
      (f) => !f.startsWith('.') && !f.endsWith('.dbcrate-tmp') && !MARKER.test(f),
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

const MARKER = /\.(missing|keep)$/;
