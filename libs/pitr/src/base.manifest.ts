import { z } from 'zod';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { isLsn, parseLsn } from './wal.names';

/**
 * `<db>/base/<backup-id>/backup.manifest.json`, written last: its presence is what makes
 * a base backup usable. It records what recovery needs (start/stop LSN, timeline, the
 * first and last WAL file the backup depends on) and what a reader needs to check and open
 * the stored object without dbcrate's help (size, sha256, compression, recipients).
 */
export const BASE_MANIFEST_FORMAT = 'dbcrate.base.manifest';
/** Version 1: one pg_basebackup tar object. Version 2: one or more parts and a file listing (method pgdata). */
export const BASE_MANIFEST_VERSION = 2;
export const BASE_MANIFEST_VERSIONS = [1, 2] as const;

const lsn = z.string().refine(isLsn, { message: 'not an LSN (e.g. 0/3000028)' });
const segmentFile = z.string().regex(/^[0-9A-F]{24}$/, 'not a WAL segment file name (24 upper-case hex)');

const storedObject = z.object({
  key: z.string(),
  storedSize: z.number().int().nonnegative(),
  /** sha256 of the stored (compressed, encrypted) bytes. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Size of the tar stream inside. */
  plaintextSize: z.number().int().nonnegative(),
});
export type BaseObject = z.infer<typeof storedObject>;

/** One file of a pgdata backup, as it was stored (a file that changed size while read is noted). */
const fileEntry = z.object({
  path: z.string().min(1),
  size: z.number().int().nonnegative(),
  /** Seconds since the epoch (lstat mtime). */
  mtime: z.number().int(),
  /** Index into `objects`. */
  part: z.number().int().nonnegative(),
  /** The file was shorter (padded with zeros) or longer (cut) than its size when opened: WAL replay repairs it. */
  changed: z.enum(['shorter', 'longer']).optional(),
});
export type BaseFileEntry = z.infer<typeof fileEntry>;

const baseFields = {
  format: z.literal(BASE_MANIFEST_FORMAT),
  kind: z.literal('physical'),
  databaseId: z.string().min(1),
  backupId: z.string().min(1),
  dbcrateVersion: z.string(),
  startedAt: z.iso.datetime(),
  finishedAt: z.iso.datetime(),
  /** Where replay must start (the checkpoint's redo point), as pg_basebackup reports it. */
  startLsn: lsn,
  /** Replay must reach at least this LSN before the cluster is consistent. */
  stopLsn: lsn,
  timeline: z.number().int().positive(),
  /** The WAL file holding startLsn. */
  startWalFile: segmentFile,
  /**
   * The last WAL file the backup needs: the one holding the byte just before stopLsn
   * (PostgreSQL's XLByteToPrevSeg, what pg_backup_stop waits to be archived). It only
   * differs from the file holding stopLsn when stopLsn is exactly on a segment boundary.
   */
  stopWalFile: segmentFile,
  server: z.object({
    version: z.string(),
    versionNum: z.number().int(),
    major: z.number(),
    systemIdentifier: z.string().regex(/^\d+$/),
  }),
  walSegmentSize: z.number().int().positive(),
  compression: z.object({ codec: z.string(), implementation: z.string(), level: z.number().int() }),
  encryption: z.object({
    cipher: z.string(),
    recipients: z.array(z.object({ fingerprint: z.string(), encryptionKeyIds: z.array(z.string()) })).min(1),
  }),
  /**
   * Tablespaces the backup covers. Version 1 only backs up clusters without user
   * tablespaces, so this holds pg_default and pg_global, both inside the data directory
   * (location ""). A reader refuses an entry with a location it does not know how to restore.
   */
  tablespaces: z.array(z.object({ oid: z.number().int(), name: z.string(), location: z.string() })),
  /** Fingerprint of the key that signed this manifest (`backup.manifest.json.sig`); absent when unsigned. */
  signer: z.string().optional(),
};

const v1Schema = z.object({
  ...baseFields,
  formatVersion: z.literal(1),
  tool: z.object({ name: z.literal('pg_basebackup'), version: z.string() }),
  /** The tar stream pg_basebackup wrote. */
  object: storedObject,
});

const v2Schema = z.object({
  ...baseFields,
  formatVersion: z.literal(2),
  /** The method: pg_basebackup's stream, or dbcrate reading the data directory itself (pgdata). */
  tool: z.object({ name: z.enum(['pg_basebackup', 'dbcrate']), version: z.string() }),
  /** The parts, each a tar stream of its own (extract them all into one directory). */
  objects: z.array(storedObject).min(1),
  /** Every file the parts hold (absent for pg_basebackup), the ground for checks and incremental backups. */
  files: z.array(fileEntry).optional(),
});

export const baseManifestSchema = z
  .discriminatedUnion('formatVersion', [v1Schema, v2Schema])
  .superRefine((m, ctx) => {
    if (isLsn(m.startLsn) && isLsn(m.stopLsn) && parseLsn(m.stopLsn) < parseLsn(m.startLsn)) {
      ctx.addIssue({
        code: 'custom',
        path: ['stopLsn'],
        message: `stop LSN ${m.stopLsn} is before start LSN ${m.startLsn}`,
      });
    }
    if (m.formatVersion === 2 && m.files?.some((f) => f.part >= m.objects.length)) {
      ctx.addIssue({ code: 'custom', path: ['files'], message: 'a file names a part that does not exist' });
    }
  });
export type BaseManifest = z.infer<typeof baseManifestSchema>;
export type BaseManifestV1 = z.infer<typeof v1Schema>;
export type BaseManifestV2 = z.infer<typeof v2Schema>;

/** The stored objects of a base backup, whatever its manifest version. */
export function baseObjects(m: BaseManifest): BaseObject[] {
  return m.formatVersion === 1 ? [m.object] : m.objects;
}

/** Total stored bytes of a base backup. */
export function baseStoredSize(m: BaseManifest): number {
  return baseObjects(m).reduce((n, o) => n + o.storedSize, 0);
}

export function serializeBaseManifest(m: BaseManifest): Buffer {
  return Buffer.from(JSON.stringify(baseManifestSchema.parse(m), null, 2) + '\n');
}

export function parseBaseManifest(raw: Buffer | string, key: string): BaseManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(raw.toString());
  } catch {
    throw new DbcrateError(ErrorCodes.INTEGRITY, `base backup manifest ${key} is not valid JSON`, {
      hint: 'the manifest is damaged; use another base backup',
    });
  }
  const r = baseManifestSchema.safeParse(doc);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      `${key} is not a dbcrate base backup manifest (versions ${BASE_MANIFEST_VERSIONS.join(', ')}) (${i.path.join('.') || 'document'}: ${i.message})`,
      { hint: 'it may come from a newer dbcrate; upgrade, or use another base backup' },
    );
  }
  return r.data;
}
