import { randomBytes } from 'node:crypto';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/**
 * Names every kind of stored object shares (dumps and base backups alike): snapshot ids, the
 * database id that heads every key, and where a manifest's signature lives.
 */
/** `<manifest>.sig`: the producer's detached armored OpenPGP signature of the manifest's bytes. */
export const SIGNATURE_SUFFIX = '.sig';

export function signatureKey(manifestKey: string): string {
  return `${manifestKey}${SIGNATURE_SUFFIX}`;
}

const SNAPSHOT_ID = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})\.(\d{3})Z(?:-[0-9a-z]{4,32})?$/;
/** What a database id may be: it names a folder in every destination. */
export const DATABASE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A new snapshot id for a backup started at `date`; `suffix` (lowercase hex) is random unless given. */
export function snapshotIdFor(date: Date, suffix: string = randomBytes(4).toString('hex')): string {
  const iso = date.toISOString(); // 2026-11-25T11:45:12.345Z
  return `${iso.replace(/[-:]/g, '')}-${suffix}`;
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
