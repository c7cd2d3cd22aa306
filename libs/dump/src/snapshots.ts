import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { untrustedError, verifyDetached, type TrustPolicy } from '@dbcrate/crypto';
import { readObject, type Storage } from '@dbcrate/storage';
import { defaultDatabaseId, DUMPS_DIR, dumpKeys, legacyDatabaseId, parseDumpKey } from './layout';
import { signatureKey, snapshotTime, validateDatabaseId } from '@dbcrate/plumbing';
import { parseManifest, type DumpManifest } from './manifest';

export type SnapshotStatus = 'complete' | 'incomplete' | 'damaged' | 'untrusted';

export interface SnapshotEntry {
  databaseId: string;
  snapshotId: string;
  time: Date;
  /**
   * complete: manifest and data agree (and, when a trust policy was given, a trusted signer
   * signed the manifest); incomplete: data without manifest (never restored); damaged:
   * manifest without matching data; untrusted: complete, but not signed by a trusted signer.
   */
  status: SnapshotStatus;
  /** Fingerprint of the trusted signer whose signature was checked. */
  signer?: string;
  reason?: string;
  dataKey?: string;
  dataSize?: number;
  manifestKey?: string;
  signatureKey?: string;
  manifest?: DumpManifest;
  /** When storage says the manifest (else the data object) was last written. */
  storedAt?: Date;
}

function lsnValue(lsn: string): bigint {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

/** When the dump started by the best clock known: the server's, else (older manifests) the client's. */
function startTimeOf(e: SnapshotEntry): number {
  const m = e.manifest;
  const t = m ? Date.parse(m.server.startTime ?? m.startedAt) : NaN;
  if (!Number.isNaN(t)) return t;
  // No readable manifest: when it was stored is a better guess than the id, which the
  // writer's clock chose.
  return (e.storedAt ?? e.time).getTime();
}

/**
 * The order of snapshots, oldest first, and so which one is "latest" (docs/format.md): by
 * the server's clock at the dump's start (`server.startTime`), so a client with a wrong
 * clock cannot reorder them; manifests written before it was recorded use their `startedAt`
 * (the client's clock), an unreadable manifest the time its object was stored. Ties (one
 * millisecond) go to the server's WAL position at the start, for dumps of one server, then
 * to the microseconds the Date lost, then to the snapshot id. One key per entry, compared
 * field by field, so the order is a total order whatever mix of servers and manifests.
 */
export function compareSnapshots(a: SnapshotEntry, b: SnapshotEntry): number {
  const ka = sortKey(a);
  const kb = sortKey(b);
  for (let i = 0; i < ka.length; i++) {
    if (ka[i] !== kb[i]) return ka[i] < kb[i] ? -1 : 1;
  }
  return 0;
}

function sortKey(e: SnapshotEntry): [number, string, bigint, string, string] {
  const s = e.manifest?.server;
  return [
    startTimeOf(e),
    s?.systemIdentifier ?? '',
    s?.startLsn ? lsnValue(s.startLsn) : -1n,
    s?.startTime ?? '',
    e.snapshotId,
  ];
}

/**
 * Why a manifest does not belong where it was read from, or undefined when it does. A
 * manifest names its database id, snapshot id and data object; they must be the ones of
 * its location. When the id was derived from the database name (`databaseIdFrom: name`),
 * the name must derive to it; older manifests (no `databaseIdFrom`) are accepted under the
 * new or the old derivation, or as an explicitly chosen id.
 */
export function manifestLocationProblem(
  m: DumpManifest,
  databaseId: string,
  snapshotId: string,
): string | undefined {
  if (m.databaseId !== databaseId) {
    return `its manifest names database id "${m.databaseId}", but it was read from "${databaseId}"`;
  }
  if (m.snapshotId !== snapshotId) {
    return `its manifest names snapshot ${m.snapshotId}, but it was read as ${snapshotId}`;
  }
  if (!m.object.key.startsWith(dumpKeys(databaseId, snapshotId, []).dataKey)) {
    return `its manifest names data object ${m.object.key}, which is not this snapshot's`;
  }
  if (m.databaseIdFrom === 'name' && defaultDatabaseId(m.server.database) !== databaseId) {
    return `its manifest is of database "${m.server.database}", whose database id is "${defaultDatabaseId(m.server.database)}", not "${databaseId}"`;
  }
  return undefined;
}

/** Whether a manifest's database id was (or may have been) derived from its database name. */
function derivedFromName(m: DumpManifest): boolean {
  if (m.databaseIdFrom) return m.databaseIdFrom === 'name';
  return [defaultDatabaseId(m.server.database), legacyDatabaseId(m.server.database)].includes(m.databaseId);
}

/** Every dump under the destination (or one database id), oldest first (see compareSnapshots). */
export async function listSnapshots(
  storage: Storage,
  opts: { databaseId?: string; trust?: TrustPolicy } = {},
): Promise<SnapshotEntry[]> {
  const prefix = opts.databaseId ? `${validateDatabaseId(opts.databaseId)}/${DUMPS_DIR}/` : '';
  await storage.checkRoot?.();
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
    if (parsed.kind === 'manifest') {
      e.manifestKey = obj.key;
      if (obj.lastModified) e.storedAt = obj.lastModified;
    } else if (parsed.kind === 'signature') e.signatureKey = obj.key;
    else {
      e.dataKey = obj.key;
      e.dataSize = obj.size;
      if (obj.lastModified && !e.manifestKey) e.storedAt ??= obj.lastModified;
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
    let raw: Buffer;
    try {
      raw = await readObject(storage, e.manifestKey);
    } catch (err) {
      // A storage that cannot be reached or read now says nothing about the snapshot; only
      // a manifest that is gone, or was read and is wrong, makes it damaged.
      if (!(err instanceof DbcrateError) || err.code !== ErrorCodes.STORAGE_NOT_FOUND) throw err;
      e.status = 'damaged';
      e.reason = `manifest ${e.manifestKey} vanished while listing`;
      continue;
    }
    try {
      e.manifest = parseManifest(raw, e.manifestKey);
    } catch (err) {
      e.status = 'damaged';
      e.reason = (err as Error).message;
      continue;
    }
    const misplaced = manifestLocationProblem(e.manifest, e.databaseId, e.snapshotId);
    if (misplaced) {
      e.status = 'damaged';
      e.reason = misplaced;
    } else if (!e.dataKey || e.dataKey !== e.manifest.object.key) {
      e.status = 'damaged';
      e.reason = `data object ${e.manifest.object.key} is missing`;
    } else if (e.dataSize !== e.manifest.object.storedSize) {
      e.status = 'damaged';
      e.reason = `data object has ${e.dataSize} bytes, manifest records ${e.manifest.object.storedSize}`;
    } else {
      e.status = 'complete';
      if (opts.trust) await checkSignature(storage, e, raw, opts.trust);
    }
  }
  return entries.sort(compareSnapshots);
}

/** The manifest's bytes as read (the ones parsed) against its `.sig` and the trusted signers. */
async function checkSignature(
  storage: Storage,
  e: SnapshotEntry,
  raw: Buffer,
  trust: TrustPolicy,
): Promise<void> {
  const sigKey = e.signatureKey ?? (e.manifestKey ? signatureKey(e.manifestKey) : undefined);
  const sig = e.signatureKey && sigKey ? (await readObject(storage, sigKey)).toString('utf8') : undefined;
  const v = await verifyDetached(raw, sig, trust);
  if (v.trusted) {
    e.signer = v.signer;
    return;
  }
  e.status = 'untrusted';
  e.reason = v.reason;
}

/**
 * Dumps of a database whose name is not a valid id were stored, before ids were made
 * collision-free, under the old derived id (`a/b` → `a_b`); new dumps of it go to the new id
 * (`a_b-<hash>`). "latest" of the old id would then silently be a stale dump: refuse it when
 * the new id holds complete dumps of the same server's database.
 */
async function refuseIfMoved(
  storage: Storage,
  last: SnapshotEntry & { manifest: DumpManifest },
): Promise<void> {
  const m = last.manifest;
  if (m.databaseIdFrom) return; // written by a version that already used the new ids
  const name = m.server.database;
  const moved = defaultDatabaseId(name);
  if (moved === last.databaseId || legacyDatabaseId(name) !== last.databaseId) return;
  const newer = (await listSnapshots(storage, { databaseId: moved })).filter(
    (e) =>
      e.status === 'complete' &&
      e.manifest?.server.database === name &&
      e.manifest.server.systemIdentifier === m.server.systemIdentifier,
  );
  if (!newer.length) return;
  const newest = newer.at(-1)!;
  throw new DbcrateError(
    ErrorCodes.USAGE,
    `"latest" of database id ${last.databaseId} would be a stale dump: newer dumps of database ${JSON.stringify(name)} are stored under database id ${moved} (the newest is ${moved}/${newest.snapshotId})`,
    {
      hint: `restore latest --database-id ${moved}, or restore ${last.databaseId}/${last.snapshotId} by its id if the old one is what you want`,
    },
  );
}

/**
 * Find the snapshot to restore: an id (optionally "<database-id>/<id>") or "latest".
 * Only complete snapshots qualify; an incomplete or damaged one is refused with the reason.
 */
export async function resolveSnapshot(
  storage: Storage,
  ref: string,
  opts: { databaseId?: string; trust?: TrustPolicy } = {},
): Promise<SnapshotEntry & { manifest: DumpManifest }> {
  let databaseId = opts.databaseId;
  let snapshotId = ref;
  if (ref.includes('/')) {
    [databaseId, snapshotId] = ref.split('/', 2);
  }
  const all = await listSnapshots(storage, { databaseId, trust: opts.trust });
  const where = `${storage.displayUrl}${databaseId ? ` (database id ${databaseId})` : ''}`;
  if (snapshotId === 'latest') {
    // Incomplete ones (data, no manifest) are not backups: running or killed ones. A damaged
    // one is, and if it is the newest "latest" must not silently mean an older one.
    const candidates = all.filter((e) => e.status !== 'incomplete');
    const dbs = new Set(candidates.map((e) => e.databaseId));
    if (dbs.size > 1) {
      throw new DbcrateError(
        ErrorCodes.USAGE,
        `"latest" is ambiguous: ${where} holds backups of ${[...dbs].join(', ')}`,
        {
          hint: 'add --database-id ID',
        },
      );
    }
    const newest = candidates.at(-1);
    const intact = candidates.filter((e) => e.status === 'complete');
    const last = intact.at(-1);
    if (newest && newest !== last) {
      const id = `${newest.databaseId}/${newest.snapshotId}`;
      const fix =
        newest.status === 'untrusted'
          ? `remove ${id} if it is forged, or --trust its signer's key if it is genuine`
          : `repair or remove ${id}`;
      throw new DbcrateError(
        newest.status === 'untrusted' ? ErrorCodes.UNTRUSTED : ErrorCodes.INTEGRITY,
        `the newest snapshot in ${where}, ${id}, is ${newest.status} (${newest.reason}); refusing to restore an older one as "latest"`,
        {
          hint: last
            ? `the newest intact snapshot is ${last.databaseId}/${last.snapshotId} (started ${new Date(startTimeOf(last)).toISOString()}): restore it by id if that is what you want, and ${fix}`
            : `no intact snapshot exists; ${fix}`,
        },
      );
    }
    if (!last) {
      throw new DbcrateError(ErrorCodes.SNAPSHOT_NOT_FOUND, `no complete backup found in ${where}`, {
        hint: all.length
          ? 'run `dbcrate snapshots` to see the incomplete ones'
          : 'check --from and --database-id',
      });
    }
    // Archives from before database ids were made collision-free may hold dumps of two
    // databases under one id ("a/b" and "a_b" both became "a_b"): "latest" would be either.
    const names = new Set(
      intact.filter((e) => derivedFromName(e.manifest!)).map((e) => e.manifest!.server.database),
    );
    if (names.size > 1) {
      throw new DbcrateError(
        ErrorCodes.USAGE,
        `"latest" is ambiguous: database id ${last.databaseId} in ${storage.displayUrl} holds dumps of the databases ${[...names].map((n) => JSON.stringify(n)).join(', ')}`,
        {
          hint: "restore one snapshot by its id (`dbcrate snapshots --json` shows each one's database); new backups of those databases go to separate ids",
        },
      );
    }
    await refuseIfMoved(storage, last as SnapshotEntry & { manifest: DumpManifest });
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
    if (e.status === 'untrusted') throw untrustedError(`snapshot ${snapshotId}`, e.reason ?? 'unsigned');
    throw new DbcrateError(
      e.status === 'incomplete' ? ErrorCodes.SNAPSHOT_INCOMPLETE : ErrorCodes.INTEGRITY,
      `snapshot ${snapshotId} is ${e.status}: ${e.reason}`,
      { hint: 'it cannot be restored; pick another snapshot' },
    );
  }
  return e as SnapshotEntry & { manifest: DumpManifest };
}
