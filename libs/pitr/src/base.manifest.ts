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
export const BASE_MANIFEST_VERSION = 1;

const lsn = z.string().refine(isLsn, { message: 'not an LSN (e.g. 0/3000028)' });
const segmentFile = z.string().regex(/^[0-9A-F]{24}$/, 'not a WAL segment file name (24 upper-case hex)');

export const baseManifestSchema = z
  .object({
    format: z.literal(BASE_MANIFEST_FORMAT),
    formatVersion: z.literal(BASE_MANIFEST_VERSION),
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
    tool: z.object({ name: z.literal('pg_basebackup'), version: z.string() }),
    object: z.object({
      key: z.string(),
      storedSize: z.number().int().nonnegative(),
      /** sha256 of the stored (compressed, encrypted) bytes. */
      sha256: z.string().regex(/^[0-9a-f]{64}$/),
      /** Size of the tar stream pg_basebackup wrote. */
      plaintextSize: z.number().int().nonnegative(),
    }),
    compression: z.object({ codec: z.string(), implementation: z.string(), level: z.number().int() }),
    encryption: z.object({
      cipher: z.string(),
      recipients: z
        .array(z.object({ fingerprint: z.string(), encryptionKeyIds: z.array(z.string()) }))
        .min(1),
    }),
    /**
     * Tablespaces the backup covers. Version 1 only backs up clusters without user
     * tablespaces, so this holds pg_default and pg_global, both inside the data directory
     * (location ""). A reader refuses an entry with a location it does not know how to restore.
     */
    tablespaces: z.array(z.object({ oid: z.number().int(), name: z.string(), location: z.string() })),
    /** Fingerprint of the key that signed this manifest (`backup.manifest.json.sig`); absent when unsigned. */
    signer: z.string().optional(),
  })
  .superRefine((m, ctx) => {
    if (isLsn(m.startLsn) && isLsn(m.stopLsn) && parseLsn(m.stopLsn) < parseLsn(m.startLsn)) {
      ctx.addIssue({
        code: 'custom',
        path: ['stopLsn'],
        message: `stop LSN ${m.stopLsn} is before start LSN ${m.startLsn}`,
      });
    }
  });
export type BaseManifest = z.infer<typeof baseManifestSchema>;

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
      `${key} is not a dbcrate v${BASE_MANIFEST_VERSION} base backup manifest (${i.path.join('.') || 'document'}: ${i.message})`,
      { hint: 'it may come from a newer dbcrate; upgrade, or use another base backup' },
    );
  }
  return r.data;
}
