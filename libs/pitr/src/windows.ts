import { z } from 'zod';
import type { Storage } from '@dbcrate/storage';
import type { TrustPolicy } from '@dbcrate/crypto';
import { listBaseBackups } from './base.backups';
import type { BaseManifest } from './base.manifest';
import {
  parseWalKey,
  readJsonObject,
  timelineKey,
  TIMELINES_DIR,
  walPrefix,
  type ParsedWalKey,
} from './pitr.layout';
import {
  DEFAULT_WAL_SEGMENT_SIZE,
  formatLsn,
  parseLsn,
  segmentNumber,
  segmentOfLsn,
  segmentStartLsn,
  walFileName,
  type TimelineHistoryEntry,
} from './wal.names';
import { liveBranches, type LiveBranch } from './timeline.branches';

export interface ArchivedWalFile extends ParsedWalKey {
  lastModified?: Date;
}

/** What the archive of one database id holds, from object names alone (no key needed). */
export interface WalIndex {
  databaseId: string;
  segmentSize: number;
  files: Map<string, ArchivedWalFile>;
  /** WAL file names archived more than once with different content. */
  conflicts: string[];
  timelines: number[];
  /** Ancestry per timeline (from timelines/<TLI>.json, written when its history file was archived). */
  histories: Map<number, TimelineHistoryEntry[]>;
}

/** timelines/<TLI>.json (proto/storage/timeline.schema.json): written with each history file. */
export const TimelineRecordSchema = z.object({
  format: z.literal('dbcrate.timeline'),
  formatVersion: z.literal(1),
  timeline: z.number().int().positive(),
  history: z.array(z.object({ timeline: z.number().int().positive(), switchLsn: z.string() })),
});

export async function indexArchive(
  storage: Storage,
  databaseId: string,
  segmentSize = DEFAULT_WAL_SEGMENT_SIZE,
): Promise<WalIndex> {
  const files = new Map<string, ArchivedWalFile>();
  const conflicts = new Set<string>();
  const timelines = new Set<number>();
  for await (const o of storage.list(walPrefix(databaseId))) {
    const p = parseWalKey(o.key);
    if (!p || o.size === 0) continue; // a zero-byte object is no archived copy
    const prev = files.get(p.name);
    if (prev && prev.sha256 !== p.sha256) conflicts.add(p.name);
    files.set(p.name, { ...p, lastModified: o.lastModified });
    timelines.add(p.timeline);
  }
  const histories = new Map<number, TimelineHistoryEntry[]>();
  for await (const o of storage.list(`${databaseId}/${TIMELINES_DIR}/`)) {
    const m = /\/([0-9A-F]{8})\.json$/.exec(o.key);
    if (!m) continue;
    const tli = parseInt(m[1], 16);
    const doc = await readJsonObject(storage, timelineKey(databaseId, tli), TimelineRecordSchema);
    if (doc) {
      histories.set(tli, doc.history);
      timelines.add(tli);
    }
  }
  return {
    databaseId,
    segmentSize,
    files,
    conflicts: [...conflicts].sort(),
    timelines: [...timelines].sort((a, b) => a - b),
    histories,
  };
}

/** One stretch of a timeline's history: `timeline` is in effect from `beginLsn` to `endLsn` (exclusive). */
export interface TimelineStretch {
  timeline: number;
  beginLsn: bigint;
  endLsn?: bigint;
}

/**
 * The timelines a recovery onto `target` passes through, oldest first. Without a
 * history (timeline 1, or its .history file was never archived) the timeline stands alone.
 */
export function timelinePath(index: WalIndex, target: number): TimelineStretch[] {
  const history = index.histories.get(target) ?? [];
  const out: TimelineStretch[] = [];
  let begin = 0n;
  for (const h of history) {
    const end = parseLsn(h.switchLsn);
    out.push({ timeline: h.timeline, beginLsn: begin, endLsn: end });
    begin = end;
  }
  out.push({ timeline: target, beginLsn: begin });
  return out;
}

/** Which timeline's file holds segment `segNo` on this path (PostgreSQL reads the newest one that began at or before it). */
export function timelineForSegment(path: TimelineStretch[], segNo: bigint, segSize: number): number {
  let tli = path[0].timeline;
  for (const s of path) if (segmentOfLsn(s.beginLsn, segSize) <= segNo) tli = s.timeline;
  return tli;
}

/** Is the backup's timeline on this path, and did the backup finish before that timeline was left? */
export function backupOnPath(b: BaseManifest, path: TimelineStretch[]): boolean {
  const stretch = path.find((s) => s.timeline === b.timeline);
  if (!stretch) return false;
  return stretch.endLsn === undefined || parseLsn(b.stopLsn) <= stretch.endLsn;
}

export interface WalGap {
  timeline: number;
  /** First missing WAL file and how many are missing before the archive continues. */
  firstMissing: string;
  missing: number;
  resumesAt: string;
}

export interface WalReach {
  /** End of the last WAL file that is present without a hole from the start segment. */
  endLsn: bigint;
  /** The last WAL file of that run and when it was stored (≈ the time its last record was written). */
  lastFile?: ArchivedWalFile;
  gaps: WalGap[];
}

/** Walk the path from `startSeg`: how far does contiguous WAL go, and what holes lie beyond? */
export function walReach(index: WalIndex, path: TimelineStretch[], startSeg: bigint): WalReach {
  const size = index.segmentSize;
  const nameOf = (seg: bigint) => walFileName(timelineForSegment(path, seg, size), seg, size);
  // The highest segment archived on this path bounds the walk.
  let maxSeg = -1n;
  for (const f of index.files.values()) {
    if (f.kind !== 'segment' || !f.segmentName) continue;
    const seg = segmentNumber(f.segmentName, size);
    if (seg >= startSeg && timelineForSegment(path, seg, size) === f.timeline && seg > maxSeg) maxSeg = seg;
  }
  let seg = startSeg;
  let lastFile: ArchivedWalFile | undefined;
  while (seg <= maxSeg && index.files.has(nameOf(seg))) {
    lastFile = index.files.get(nameOf(seg));
    seg++;
  }
  const endLsn = segmentStartLsn(seg, size);
  const gaps: WalGap[] = [];
  while (seg <= maxSeg) {
    const first = seg;
    while (seg <= maxSeg && !index.files.has(nameOf(seg))) seg++;
    gaps.push({
      timeline: timelineForSegment(path, first, size),
      firstMissing: nameOf(first),
      missing: Number(seg - first),
      resumesAt: nameOf(seg),
    });
    while (seg <= maxSeg && index.files.has(nameOf(seg))) seg++;
  }
  return { endLsn, lastFile, gaps };
}

export interface RestoreWindow {
  timeline: number;
  /** The earliest consistent point: the oldest usable base backup's end. */
  from: { lsn: string; time: string; backupId: string };
  /** The end of contiguous archived WAL; the time is when its last file was stored. */
  to: { lsn: string; time?: string; walFile?: string };
  gaps: WalGap[];
}

export interface DatabaseWindows {
  databaseId: string;
  baseBackups: BaseManifest[];
  timelines: RestoreWindow[];
  /** Timelines with WAL but no base backup that can reach them. */
  unreachable: number[];
  conflicts: string[];
  /** The newest timeline and others that kept growing after it forked (recover then needs --timeline). */
  liveBranches: LiveBranch[];
  /** Complete base backups not signed by a trusted signer: not used for any window. */
  untrusted?: { backupId: string; reason: string }[];
}

export async function restoreWindows(
  storage: Storage,
  databaseId: string,
  opts: { trust?: TrustPolicy } = {},
): Promise<DatabaseWindows> {
  const listed = await listBaseBackups(storage, databaseId, opts);
  const backups = listed.filter((e) => e.status === 'complete').map((e) => e.manifest!);
  const untrusted = listed
    .filter((e) => e.status === 'untrusted')
    .map((e) => ({ backupId: e.backupId, reason: e.reason ?? 'unsigned' }));
  const segSize = backups[0]?.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
  const index = await indexArchive(storage, databaseId, segSize);
  return { ...windowsFromIndex(index, backups), ...(opts.trust ? { untrusted } : {}) };
}

export function windowsFromIndex(index: WalIndex, backups: BaseManifest[]): DatabaseWindows {
  const out: RestoreWindow[] = [];
  const unreachable: number[] = [];
  const timelines = new Set([...index.timelines, ...backups.map((b) => b.timeline)]);
  for (const tli of [...timelines].sort((a, b) => a - b)) {
    const path = timelinePath(index, tli);
    const usable = backups.filter((b) => backupOnPath(b, path));
    if (usable.length === 0) {
      unreachable.push(tli);
      continue;
    }
    // The window starts at the oldest backup that can become consistent: its WAL up to stopLsn is archived.
    let oldest: BaseManifest | undefined;
    let reach: WalReach | undefined;
    for (const b of usable) {
      const r = walReach(index, path, segmentNumber(b.startWalFile, index.segmentSize));
      if (r.endLsn > parseLsn(b.stopLsn)) {
        oldest = b;
        reach = r;
        break;
      }
    }
    if (!oldest || !reach) {
      unreachable.push(tli);
      continue;
    }
    out.push({
      timeline: tli,
      from: { lsn: oldest.stopLsn, time: oldest.finishedAt, backupId: oldest.backupId },
      to: {
        lsn: formatLsn(reach.endLsn),
        time: reach.lastFile?.lastModified?.toISOString(),
        walFile: reach.lastFile?.name,
      },
      gaps: reach.gaps,
    });
  }
  return {
    databaseId: index.databaseId,
    baseBackups: backups,
    timelines: out,
    unreachable,
    conflicts: index.conflicts,
    liveBranches: timelines.size ? liveBranches(index, Math.max(...timelines)) : [],
  };
}

export function describeWindow(w: RestoreWindow): string {
  const to = w.to.time ? `${w.to.time} (${w.to.lsn})` : w.to.lsn;
  return `recoverable from ${w.from.time} (${w.from.lsn}, base backup ${w.from.backupId}) to ${to} on timeline ${w.timeline}`;
}
