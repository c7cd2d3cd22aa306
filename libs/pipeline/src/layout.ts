import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/**
 * Where a logical dump lives, relative to the destination root:
 *   <database-id>/dumps/<YYYY-MM-DD>/<snapshot-id>.dump.zst.pgp
 *   <database-id>/dumps/<YYYY-MM-DD>/<snapshot-id>.manifest.json   (written last)
 * The snapshot id is the UTC start time to the millisecond (20261125T114512.345Z), so ids
 * sort by time and a reader needs no index to find "latest".
 */
export const DUMPS_DIR = 'dumps';
export const MANIFEST_SUFFIX = '.manifest.json';

const SNAPSHOT_ID = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z$/;
const DATABASE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function snapshotIdFor(date: Date): string {
  const iso = date.toISOString(); // 2026-11-25T11:45:12.345Z
  return iso.replace(/[-:]/g, '');
}

export function snapshotTime(id: string): Date | undefined {
  const m = SNAPSHOT_ID.exec(id);
  if (!m) return undefined;
  return new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`);
}

export function isSnapshotId(id: string): boolean {
  return snapshotTime(id) !== undefined;
}

export function validateDatabaseId(id: string): string {
  if (!DATABASE_ID.test(id)) {
    throw new DbcrateError(ErrorCodes.CONFIG, `database id "${id}" is not valid`, {
      hint: 'use 1-128 characters from A-Z a-z 0-9 . _ - (starting with a letter or digit), e.g. --database-id orders-prod',
    });
  }
  return id;
}

/** A default database id from the database name: safe characters only. */
export function defaultDatabaseId(dbName: string): string {
  const cleaned = dbName.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[^A-Za-z0-9]+/, '');
  return validateDatabaseId(cleaned.slice(0, 128) || 'db');
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
  kind: 'data' | 'manifest';
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
  const m = /^(.+?)\.dump\.(.+)$/.exec(file);
  if (!m || !isSnapshotId(m[1])) return undefined;
  return { databaseId, snapshotId: m[1], kind: 'data', extensions: m[2].split('.') };
}
