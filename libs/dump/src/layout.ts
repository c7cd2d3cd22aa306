import { createHash } from 'node:crypto';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import {
  DATABASE_ID,
  isSnapshotId,
  SIGNATURE_SUFFIX,
  snapshotTime,
  validateDatabaseId,
} from '@dbcrate/plumbing';

/**
 * Where a logical dump lives, relative to the destination root:
 *   <database-id>/dumps/<YYYY-MM-DD>/<snapshot-id>.dump.zst.pgp
 *   <database-id>/dumps/<YYYY-MM-DD>/<snapshot-id>.manifest.json.sig  (signature, before the manifest)
 *   <database-id>/dumps/<YYYY-MM-DD>/<snapshot-id>.manifest.json   (written last)
 * The snapshot id is the UTC start time to the millisecond and a random suffix
 * (20261125T114512.345Z-3f9a0c1e), so two backups started in the same millisecond never
 * share a name, and ids still sort by (client) time. Ids written before the suffix existed
 * (20261125T114512.345Z) stay valid. Which snapshot is "latest" is decided by what the
 * server recorded (see compareSnapshots), not by the id.
 */
export const DUMPS_DIR = 'dumps';
export const MANIFEST_SUFFIX = '.manifest.json';
/**
 * The default database id for a database name. A name that is already a valid id is used
 * as it is (so existing archives keep their id); any other name gets a readable form plus
 * 12 hex of the name's sha256, so that "a/b", "a_b" and "a b" never share a folder.
 */
export function defaultDatabaseId(dbName: string): string {
  if (DATABASE_ID.test(dbName)) return dbName;
  const readable = dbName
    .normalize('NFKD')
    .replace(/\p{M}/gu, '') // ü → u
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 128 - 13);
  const hash = createHash('sha256').update(dbName, 'utf8').digest('hex').slice(0, 12);
  return validateDatabaseId(`${readable || 'db'}-${hash}`);
}

/** The default id dbcrate derived before it was made collision-free; old archives live under it. */
export function legacyDatabaseId(dbName: string): string {
  const cleaned = dbName.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[^A-Za-z0-9]+/, '');
  return cleaned.slice(0, 128) || 'db';
}

export interface DumpKeys {
  dataKey: string;
  manifestKey: string;
}

export function dumpKeys(databaseId: string, snapshotId: string, extensions: string[]): DumpKeys {
  const t = snapshotTime(snapshotId);
  if (!t) throw new DbcrateError(ErrorCodes.INTERNAL, `bad snapshot id ${snapshotId}`);
  const day = t.toISOString().slice(0, 10);
  const base = `${databaseId}/${DUMPS_DIR}/${day}/${snapshotId}`;
  return { dataKey: `${base}.dump.${extensions.join('.')}`, manifestKey: `${base}${MANIFEST_SUFFIX}` };
}

export interface ParsedDumpKey {
  databaseId: string;
  snapshotId: string;
  kind: 'data' | 'manifest' | 'signature';
  /** For data objects: the stage extensions after ".dump." (e.g. ["zst", "pgp"]). */
  extensions: string[];
}

/** Recognise a dump object key; anything else (temp files, probes, other layouts) → undefined. */
export function parseDumpKey(key: string): ParsedDumpKey | undefined {
  const parts = key.split('/');
  if (parts.length !== 4 || parts[1] !== DUMPS_DIR) return undefined;
  const [databaseId, , , file] = parts;
  if (!DATABASE_ID.test(databaseId)) return undefined;
  if (file.endsWith(MANIFEST_SUFFIX)) {
    const id = file.slice(0, -MANIFEST_SUFFIX.length);
    return isSnapshotId(id) ? { databaseId, snapshotId: id, kind: 'manifest', extensions: [] } : undefined;
  }
  if (file.endsWith(MANIFEST_SUFFIX + SIGNATURE_SUFFIX)) {
    const id = file.slice(0, -(MANIFEST_SUFFIX + SIGNATURE_SUFFIX).length);
    return isSnapshotId(id) ? { databaseId, snapshotId: id, kind: 'signature', extensions: [] } : undefined;
  }
  const m = /^(.+?)\.dump\.(.+)$/.exec(file);
  if (!m || !isSnapshotId(m[1])) return undefined;
  return { databaseId, snapshotId: m[1], kind: 'data', extensions: m[2].split('.') };
}
