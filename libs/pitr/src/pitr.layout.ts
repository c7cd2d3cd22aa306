import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { isSnapshotId, validateDatabaseId } from '@dbcrate/plumbing';
import { readObject, type Storage } from '@dbcrate/storage';
import { parseWalFileName, type WalFileName } from './wal.names';

/**
 * Where physical backups and WAL live, relative to the destination root (docs/pitr.md):
 *   <db>/cluster.json
 *   <db>/base/<backup-id>/base.tar.zst.pgp, backup.manifest.json (written last)
 *   <db>/base/<backup-id>/data.<k>.tar.zst.pgp (method pgdata: one per part, k from 0)
 *   <db>/wal/<timeline+log (16 hex)>/<wal-file-name>-<sha256 of plaintext>.zst.pgp
 *   <db>/wal/history/<TLI>.history-<sha256>.zst.pgp      (format 2; format 1: flat wal/)
 *   <db>/timelines/<TLI>.json
 */
export const CLUSTER_FILE = 'cluster.json';
export const BASE_DIR = 'base';
export const WAL_DIR = 'wal';
export const TIMELINES_DIR = 'timelines';
export const BASE_DATA_FILE = 'base.tar';
/** Parts of a pgdata backup: `data.<k>.tar.zst.pgp`. */
export const BASE_PART_PREFIX = 'data.';
export const BASE_MANIFEST_FILE = 'backup.manifest.json';
/** Stage extensions of every object we write: zstd, then OpenPGP. */
export const OBJECT_EXTENSIONS = ['zst', 'pgp'];

export { validateDatabaseId };

export function clusterKey(databaseId: string): string {
  return `${databaseId}/${CLUSTER_FILE}`;
}

export function baseBackupKeys(
  databaseId: string,
  backupId: string,
): { dataKey: string; manifestKey: string } {
  const dir = `${databaseId}/${BASE_DIR}/${backupId}`;
  return {
    dataKey: `${dir}/${BASE_DATA_FILE}.${OBJECT_EXTENSIONS.join('.')}`,
    manifestKey: `${dir}/${BASE_MANIFEST_FILE}`,
  };
}

/** The storage key of part k of a pgdata base backup. */
export function baseBackupPartKey(databaseId: string, backupId: string, part: number): string {
  return `${databaseId}/${BASE_DIR}/${backupId}/${BASE_PART_PREFIX}${part}.tar.${OBJECT_EXTENSIONS.join('.')}`;
}

const PART_FILE = /^data\.(0|[1-9]\d{0,3})\.tar\./;

export function parseBaseKey(
  key: string,
): { databaseId: string; backupId: string; kind: 'data' | 'manifest' } | undefined {
  const parts = key.split('/');
  if (parts.length !== 4 || parts[1] !== BASE_DIR || !isSnapshotId(parts[2])) return undefined;
  if (parts[3] === BASE_MANIFEST_FILE) return { databaseId: parts[0], backupId: parts[2], kind: 'manifest' };
  if (parts[3].startsWith(`${BASE_DATA_FILE}.`) || PART_FILE.test(parts[3]))
    return { databaseId: parts[0], backupId: parts[2], kind: 'data' };
  return undefined;
}

export function walPrefix(databaseId: string): string {
  return `${databaseId}/${WAL_DIR}/`;
}

/** WAL layout of an archive: 1 flat `wal/`, 2 partitioned (cluster.json formatVersion). */
export type WalLayout = 1 | 2;
export const WAL_HISTORY_DIR = 'history';

/**
 * Layout 2: `wal/<timeline + log, the first 16 hex of the segment name>/` (one folder per
 * 4 GiB of WAL: 256 segments of 16 MiB, like pgBackRest), `wal/history/` for history files.
 * A push or a fetch lists one folder, whatever the size of the archive.
 */
export function walPartition(walFile: string): string {
  const p = parseWalFileName(walFile);
  return p?.segmentName ? p.segmentName.slice(0, 16) : WAL_HISTORY_DIR;
}

/** Listing this prefix finds every archived copy of one WAL file (there should be at most one). */
export function walLookupPrefix(databaseId: string, walFile: string, layout: WalLayout = 2): string {
  const dir = layout === 1 ? walPrefix(databaseId) : `${walPrefix(databaseId)}${walPartition(walFile)}/`;
  return `${dir}${walFile}-`;
}

export function walKey(databaseId: string, walFile: string, sha256: string, layout: WalLayout = 2): string {
  return `${walLookupPrefix(databaseId, walFile, layout)}${sha256}.${OBJECT_EXTENSIONS.join('.')}`;
}

export interface ParsedWalKey extends WalFileName {
  key: string;
  sha256: string;
  extensions: string[];
}

const WAL_OBJECT = /^([0-9A-F.a-z]+)-([0-9a-f]{64})\.([a-z0-9.]+)$/;

/** Recognise an archived WAL object key (relative to the root), in either layout; temp files and others → undefined. */
export function parseWalKey(key: string): ParsedWalKey | undefined {
  const parts = key.split('/');
  if ((parts.length !== 3 && parts.length !== 4) || parts[1] !== WAL_DIR) return undefined;
  const m = WAL_OBJECT.exec(parts[parts.length - 1]);
  if (!m) return undefined;
  const name = parseWalFileName(m[1]);
  if (!name) return undefined;
  // in layout 2, only in the partition it belongs to
  if (parts.length === 4 && parts[2] !== walPartition(name.name)) return undefined;
  return { ...name, key, sha256: m[2], extensions: m[3].split('.') };
}

export function timelineKey(databaseId: string, timeline: number): string {
  return `${databaseId}/${TIMELINES_DIR}/${timeline.toString(16).toUpperCase().padStart(8, '0')}.json`;
}

/** 1: flat wal/; 2: WAL in partitions (wal/<timeline+log>/, wal/history/). Both are read. */
export const CLUSTER_FORMAT_VERSION: WalLayout = 2;

export const ClusterIdentitySchema = z.object({
  format: z.literal('dbcrate.cluster'),
  formatVersion: z.union([z.literal(1), z.literal(2)]),
  databaseId: z.string(),
  systemIdentifier: z.string().regex(/^\d+$/),
  walSegmentSize: z.number().int().positive(),
  createdAt: z.string(),
});
export type ClusterIdentity = z.infer<typeof ClusterIdentitySchema>;

async function readSmall(storage: Storage, key: string): Promise<string | undefined> {
  try {
    return (await readObject(storage, key)).toString('utf8');
  } catch (e) {
    if ((e as { code?: string }).code === ErrorCodes.STORAGE_NOT_FOUND) return undefined;
    throw e;
  }
}

export async function readJsonObject<T>(
  storage: Storage,
  key: string,
  schema: z.ZodType<T>,
): Promise<T | undefined> {
  const text = await readSmall(storage, key);
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new DbcrateError(ErrorCodes.INTEGRITY, `${key} in ${storage.displayUrl} is not valid JSON`);
  }
  const r = schema.safeParse(parsed);
  if (!r.success) {
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      `${key} in ${storage.displayUrl} is not a valid dbcrate file: ${r.error.issues[0]?.message}`,
    );
  }
  return r.data;
}

export async function readClusterIdentity(
  storage: Storage,
  databaseId: string,
): Promise<ClusterIdentity | undefined> {
  return readJsonObject(storage, clusterKey(databaseId), ClusterIdentitySchema);
}

function mismatch(
  databaseId: string,
  storage: Storage,
  have: ClusterIdentity,
  systemIdentifier: string,
): DbcrateError {
  return new DbcrateError(
    ErrorCodes.CLUSTER_MISMATCH,
    `database id "${databaseId}" in ${storage.displayUrl} belongs to the cluster with system identifier ${have.systemIdentifier}, not ${systemIdentifier}`,
    {
      hint: 'two clusters must never share WAL under one id: give this cluster its own --database-id (or leave it unset: the default is the system identifier)',
    },
  );
}

export const CLAIMS_DIR = 'claims';
const CLUSTER_CLAIM = /^cluster-(\d+)-[0-9a-f]{16}\.json$/;

async function clusterClaims(
  storage: Storage,
  databaseId: string,
): Promise<{ key: string; sysid: string }[]> {
  const out: { key: string; sysid: string }[] = [];
  for await (const o of storage.list(`${databaseId}/${CLAIMS_DIR}/`)) {
    const m = CLUSTER_CLAIM.exec(o.key.slice(o.key.lastIndexOf('/') + 1));
    if (m) out.push({ key: o.key, sysid: m[1] });
  }
  return out;
}

function claimMismatch(
  databaseId: string,
  storage: Storage,
  claim: { key: string; sysid: string },
  sysid: string,
) {
  return new DbcrateError(
    ErrorCodes.CLUSTER_MISMATCH,
    `database id "${databaseId}" in ${storage.displayUrl} is being claimed by the cluster with system identifier ${claim.sysid}, not ${sysid}`,
    {
      hint: `two clusters must never share WAL under one id: give this cluster its own --database-id. If no other cluster archives there, delete ${claim.key} (left by an interrupted first push)`,
    },
  );
}

/**
 * Bind a database id to one cluster: the first writer creates cluster.json, every later
 * writer must match it. Guards against two clusters mixing WAL under one prefix.
 * Creating it races like a WAL name (wal.claim.ts): a claim `<db>/claims/cluster-<sysid>-<random>.json`
 * first, then the claims are listed and cluster.json re-read, so that of two clusters racing
 * on an empty prefix at most one succeeds, also where conditional writes are ignored.
 * Without `walSegmentSize` (a history file, which does not tell) nothing is created:
 * undefined when there is no cluster.json yet.
 */
export async function ensureClusterIdentity(
  storage: Storage,
  databaseId: string,
  cluster: { systemIdentifier: string; walSegmentSize?: number },
  hooks: {
    afterPrecheck?: () => Promise<void>;
    beforeClaimCheck?: () => Promise<void>;
    afterClaimCheck?: () => Promise<void>;
  } = {},
): Promise<ClusterIdentity | undefined> {
  const sysid = cluster.systemIdentifier;
  const check = (have: ClusterIdentity): ClusterIdentity => {
    if (have.systemIdentifier !== sysid) throw mismatch(databaseId, storage, have, sysid);
    return have;
  };
  const existing = await readClusterIdentity(storage, databaseId);
  if (existing) return check(existing);
  if (!cluster.walSegmentSize) return undefined;
  const foreign = (await clusterClaims(storage, databaseId)).find((c) => c.sysid !== sysid);
  if (foreign) throw claimMismatch(databaseId, storage, foreign, sysid);
  await hooks.afterPrecheck?.();
  const claimKey = `${databaseId}/${CLAIMS_DIR}/cluster-${sysid}-${randomBytes(8).toString('hex')}.json`;
  await storage.put(claimKey, Readable.from([JSON.stringify({ systemIdentifier: sysid }) + '\n']), {
    ifNotExists: true,
  });
  try {
    await hooks.beforeClaimCheck?.();
    const claims = [
      ...(await clusterClaims(storage, databaseId)),
      ...(await clusterClaims(storage, databaseId)),
    ];
    await hooks.afterClaimCheck?.();
    const other = claims.find((c) => c.sysid !== sysid);
    if (other) throw claimMismatch(databaseId, storage, other, sysid);
    const now = await readClusterIdentity(storage, databaseId);
    if (now) return check(now);
    const identity: ClusterIdentity = {
      format: 'dbcrate.cluster',
      formatVersion: CLUSTER_FORMAT_VERSION,
      databaseId,
      systemIdentifier: sysid,
      walSegmentSize: cluster.walSegmentSize,
      createdAt: new Date().toISOString(),
    };
    try {
      await storage.put(clusterKey(databaseId), Readable.from([JSON.stringify(identity, null, 2) + '\n']), {
        ifNotExists: true,
      });
    } catch (e) {
      // Another writer of this cluster won the race: compare with what it wrote.
      if ((e as { code?: string }).code !== ErrorCodes.STORAGE_CONFLICT) throw e;
      const after = await readClusterIdentity(storage, databaseId);
      if (!after) throw e;
      return check(after);
    }
    for (const c of new Set(claims.filter((x) => x.key !== claimKey).map((x) => x.key)))
      await storage.delete(c).catch(() => undefined);
    return identity;
  } finally {
    // (an empty claims/ folder stays on file/SFTP: removing it could pull it from under a
    // racer about to write its claim there)
    await storage.delete(claimKey).catch(() => undefined);
    // On file and SFTP the claims folder would stay behind, empty (rmdir only removes it so).
    await storage.removeEmptyDir?.(`${databaseId}/${CLAIMS_DIR}`).catch(() => undefined);
  }
}

/** Database ids under the root that hold a cluster.json (physical backups / WAL). */
export async function listClusterIds(storage: Storage): Promise<string[]> {
  await storage.checkRoot?.();
  const ids = new Set<string>();
  for await (const o of storage.list('')) {
    const parts = o.key.split('/');
    if (parts.length === 2 && parts[1] === CLUSTER_FILE) ids.add(parts[0]);
  }
  return [...ids].sort();
}

/** The database id to use when the user gave none: the only one in the destination. */
export async function resolveClusterId(storage: Storage, given?: string): Promise<string> {
  if (given) {
    validateDatabaseId(given);
    await storage.checkRoot?.();
    if (!(await readClusterIdentity(storage, given))) {
      throw new DbcrateError(
        ErrorCodes.SNAPSHOT_NOT_FOUND,
        `no physical backups or WAL for database id "${given}" in ${storage.displayUrl}`,
        {
          hint: 'run `dbcrate windows --from DEST` to see which database ids it holds',
        },
      );
    }
    return given;
  }
  const ids = await listClusterIds(storage);
  if (ids.length === 1) return ids[0];
  if (ids.length === 0) {
    throw new DbcrateError(
      ErrorCodes.SNAPSHOT_NOT_FOUND,
      `${storage.displayUrl} holds no physical backups or WAL`,
      {
        hint: 'check --from; base backups come from `dbcrate basebackup`, WAL from `dbcrate wal-push` as archive_command',
      },
    );
  }
  throw new DbcrateError(
    ErrorCodes.USAGE,
    `${storage.displayUrl} holds several databases: ${ids.join(', ')}`,
    {
      hint: 'choose one with --database-id ID',
    },
  );
}
