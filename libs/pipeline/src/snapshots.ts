import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { readObject, type Storage } from '@dbcrate/storage';
import { DUMPS_DIR, parseDumpKey, snapshotTime, validateDatabaseId } from './layout';
import { parseManifest, type DumpManifest } from './manifest';

export type SnapshotStatus = 'complete' | 'incomplete' | 'damaged';

export interface SnapshotEntry {
  databaseId: string;
  snapshotId: string;
  time: Date;
  /** complete: manifest and data agree; incomplete: data without manifest (never restored); damaged: manifest without matching data. */
  status: SnapshotStatus;
  reason?: string;
  dataKey?: string;
  dataSize?: number;
  manifestKey?: string;
  manifest?: DumpManifest;
}

/** Every dump under the destination (or one database id), oldest first. */
export async function listSnapshots(
  storage: Storage,
  opts: { databaseId?: string } = {},
): Promise<SnapshotEntry[]> {
  const prefix = opts.databaseId ? `${validateDatabaseId(opts.databaseId)}/${DUMPS_DIR}/` : '';
  const byId = new Map<string, SnapshotEntry>();
  for await (const obj of storage.list(prefix)) {
    const parsed = parseDumpKey(obj.key);
    if (!parsed) continue;
    const id = `${parsed.databaseId}/${parsed.snapshotId}`;
    let e = byId.get(id);
    if (!e) {
      e = {
        databaseId: parsed.databaseId,
        snapshotId: parsed.snapshotId,
        time: snapshotTime(parsed.snapshotId)!,
        status: 'incomplete',
      };
      byId.set(id, e);
    }
    if (parsed.kind === 'manifest') e.manifestKey = obj.key;
    else {
      e.dataKey = obj.key;
      e.dataSize = obj.size;
    }
  }
  const entries = [...byId.values()].sort(
    (a, b) => a.time.getTime() - b.time.getTime() || a.databaseId.localeCompare(b.databaseId),
  );
  for (const e of entries) {
    if (!e.manifestKey) {
      e.status = 'incomplete';
      e.reason = 'no manifest: the backup did not finish';
      continue;
    }
    try {
      e.manifest = parseManifest(await readObject(storage, e.manifestKey), e.manifestKey);
    } catch (err) {
      e.status = 'damaged';
      e.reason = (err as Error).message;
      continue;
    }
    if (!e.dataKey || e.dataKey !== e.manifest.object.key) {
      e.status = 'damaged';
      e.reason = `data object ${e.manifest.object.key} is missing`;
    } else if (e.dataSize !== e.manifest.object.storedSize) {
      e.status = 'damaged';
      e.reason = `data object has ${e.dataSize} bytes, manifest records ${e.manifest.object.storedSize}`;
    } else {
      e.status = 'complete';
    }
  }
  return entries;
}

/**
 * Find the snapshot to restore: an id (optionally "<database-id>/<id>") or "latest".
 * Only complete snapshots qualify; an incomplete or damaged one is refused with the reason.
 */
export async function resolveSnapshot(
  storage: Storage,
  ref: string,
  opts: { databaseId?: string } = {},
): Promise<SnapshotEntry & { manifest: DumpManifest }> {
  let databaseId = opts.databaseId;
  let snapshotId = ref;
  if (ref.includes('/')) {
    [databaseId, snapshotId] = ref.split('/', 2);
  }
  const all = await listSnapshots(storage, { databaseId });
  const where = `${storage.displayUrl}${databaseId ? ` (database id ${databaseId})` : ''}`;
  if (snapshotId === 'latest') {
    const complete = all.filter((e) => e.status === 'complete');
    const dbs = new Set(complete.map((e) => e.databaseId));
    if (dbs.size > 1) {
      throw new DbcrateError(
        ErrorCodes.USAGE,
        `"latest" is ambiguous: ${where} holds backups of ${[...dbs].join(', ')}`,
        {
          hint: 'add --database-id ID',
        },
      );
    }
    const last = complete.at(-1);
    if (!last) {
      throw new DbcrateError(ErrorCodes.SNAPSHOT_NOT_FOUND, `no complete backup found in ${where}`, {
        hint: all.length
          ? 'run `dbcrate snapshots` to see the incomplete ones'
          : 'check --from and --database-id',
      });
    }
    return last as SnapshotEntry & { manifest: DumpManifest };
  }
  const matches = all.filter((e) => e.snapshotId === snapshotId);
  if (matches.length === 0) {
    throw new DbcrateError(ErrorCodes.SNAPSHOT_NOT_FOUND, `snapshot ${snapshotId} not found in ${where}`, {
      hint: 'run `dbcrate snapshots --from …` to list the snapshots',
    });
  }
  if (matches.length > 1) {
    throw new DbcrateError(ErrorCodes.USAGE, `snapshot ${snapshotId} exists for several databases`, {
      hint: 'add --database-id ID',
    });
  }
  const e = matches[0];
  if (e.status !== 'complete') {
    throw new DbcrateError(
      e.status === 'incomplete' ? ErrorCodes.SNAPSHOT_INCOMPLETE : ErrorCodes.INTEGRITY,
      `snapshot ${snapshotId} is ${e.status}: ${e.reason}`,
      { hint: 'it cannot be restored; pick another snapshot' },
    );
  }
  return e as SnapshotEntry & { manifest: DumpManifest };
}
