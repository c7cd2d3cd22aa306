import type { TrustPolicy } from '@dbcrate/crypto';
import { listSnapshots, type SnapshotEntry } from '@dbcrate/dump';
import type { Storage } from '@dbcrate/storage';
import { listBaseBackups, type BaseBackupEntry } from '@dbcrate/pitr';
import { baseStoredSize } from '@dbcrate/pitr';
import { DEFAULT_WAL_SEGMENT_SIZE } from '@dbcrate/pitr';
import { listClusterIds } from '@dbcrate/pitr';
import { describeLiveBranches } from '@dbcrate/pitr';
import { describeWindow, indexArchive, windowsFromIndex, type WalGap } from '@dbcrate/pitr';

/** One backup as `dbcrate info` shows it: dumps and base backups alike. */
export interface BackupInfo {
  kind: 'logical' | 'physical';
  id: string;
  status: string;
  reason?: string;
  storedBytes?: number;
  startedAt?: string;
  finishedAt?: string;
  durationSeconds?: number;
  timeline?: number;
  startLsn?: string;
  stopLsn?: string;
  /** Fingerprint of the trusted signer whose signature was checked (with a trust policy). */
  signer?: string;
}

export interface WalRangeInfo {
  timeline: number;
  first: string;
  last: string;
  files: number;
}

export interface DatabaseInfo {
  databaseId: string;
  backups: BackupInfo[];
  wal: WalRangeInfo[];
  /** Restore windows, one line per timeline (as `dbcrate windows` prints them). */
  windows: string[];
  gaps: WalGap[];
  problems: string[];
}

export interface ArchiveInfo {
  destination: string;
  databases: DatabaseInfo[];
}

function seconds(from?: string, to?: string): number | undefined {
  if (!from || !to) return undefined;
  const d = (Date.parse(to) - Date.parse(from)) / 1000;
  return Number.isFinite(d) ? Math.round(d * 10) / 10 : undefined;
}

function dumpInfo(e: SnapshotEntry): BackupInfo {
  const m = e.manifest;
  return {
    kind: 'logical',
    id: e.snapshotId,
    status: e.status,
    ...(e.reason && e.status !== 'complete' ? { reason: e.reason } : {}),
    storedBytes: m?.object.storedSize ?? e.dataSize,
    startedAt: m?.server.startTime ?? m?.startedAt,
    finishedAt: m?.finishedAt,
    durationSeconds: seconds(m?.startedAt, m?.finishedAt),
    startLsn: m?.server.startLsn,
    signer: e.signer,
  };
}

function baseInfo(e: BaseBackupEntry): BackupInfo {
  const m = e.manifest;
  return {
    kind: 'physical',
    id: e.backupId,
    status: e.status,
    ...(e.reason && e.status !== 'complete' ? { reason: e.reason } : {}),
    storedBytes: m ? baseStoredSize(m) : e.dataSize,
    startedAt: m?.startedAt,
    finishedAt: m?.finishedAt,
    durationSeconds: seconds(m?.startedAt, m?.finishedAt),
    timeline: m?.timeline,
    startLsn: m?.startLsn,
    stopLsn: m?.stopLsn,
    signer: e.signer,
  };
}

/**
 * Everything a destination holds, per database id (as pgBackRest's `info`): dumps and base
 * backups with size, duration, LSN range, signer and status; archived WAL per timeline; the
 * restore windows and what breaks them. Reads object names and manifests only: no key needed.
 */
export async function describeArchive(
  storage: Storage,
  opts: { databaseId?: string; trust?: TrustPolicy } = {},
): Promise<ArchiveInfo> {
  const dumps = await listSnapshots(storage, { databaseId: opts.databaseId, trust: opts.trust });
  const clusters = opts.databaseId
    ? (await listClusterIds(storage)).filter((id) => id === opts.databaseId)
    : await listClusterIds(storage);
  const ids = [...new Set([...dumps.map((d) => d.databaseId), ...clusters])].sort();
  const databases: DatabaseInfo[] = [];
  for (const databaseId of ids) {
    const backups = dumps.filter((d) => d.databaseId === databaseId).map(dumpInfo);
    const info: DatabaseInfo = { databaseId, backups, wal: [], windows: [], gaps: [], problems: [] };
    if (clusters.includes(databaseId)) {
      const listed = await listBaseBackups(storage, databaseId, { trust: opts.trust });
      info.backups.push(...listed.map(baseInfo));
      const usable = listed.filter((e) => e.status === 'complete').map((e) => e.manifest!);
      const index = await indexArchive(
        storage,
        databaseId,
        usable[0]?.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE,
      );
      const perTimeline = new Map<number, string[]>();
      for (const f of index.files.values()) {
        if (f.kind !== 'segment') continue;
        const list = perTimeline.get(f.timeline) ?? [];
        list.push(f.name);
        perTimeline.set(f.timeline, list);
      }
      for (const [timeline, names] of [...perTimeline].sort((a, b) => a[0] - b[0])) {
        names.sort();
        info.wal.push({ timeline, first: names[0], last: names.at(-1)!, files: names.length });
      }
      const w = windowsFromIndex(index, usable);
      info.windows = w.timelines.map(describeWindow);
      info.gaps = w.timelines.flatMap((t) => t.gaps);
      if (w.liveBranches.length) info.problems.push(describeLiveBranches(w.liveBranches));
      for (const c of w.conflicts) info.problems.push(`${c} is archived twice with different content`);
      for (const t of w.unreachable)
        info.problems.push(`timeline ${t}: WAL archived but no base backup can reach it`);
    }
    info.backups.sort((a, b) => (a.startedAt ?? '').localeCompare(b.startedAt ?? ''));
    databases.push(info);
  }
  return { destination: storage.displayUrl, databases };
}
