import { z } from 'zod';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/**
 * The manifest is written last; its presence is what makes an object a backup. It
 * records everything needed to check and open the object without dbcrate's metadata DB.
 */
export const MANIFEST_FORMAT = 'dbcrate.dump.manifest';
export const MANIFEST_VERSION = 1;

export const dumpManifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  formatVersion: z.literal(MANIFEST_VERSION),
  kind: z.literal('logical'),
  databaseId: z.string(),
  /** How the id was chosen: derived from server.database (`name`) or given (`option`). Absent before 0.x. */
  databaseIdFrom: z.enum(['name', 'option']).optional(),
  snapshotId: z.string(),
  dbcrateVersion: z.string(),
  startedAt: z.string(),
  finishedAt: z.string(),
  server: z.object({
    version: z.string(),
    versionNum: z.number().int(),
    major: z.number().int(),
    systemIdentifier: z.string().optional(),
    database: z.string(),
    /** The server's clock_timestamp() when the dump started (ISO-8601 UTC); orders "latest". */
    startTime: z.string().optional(),
    /** pg_current_wal_lsn() (pg_last_wal_replay_lsn() on a standby) when the dump started. */
    startLsn: z
      .string()
      .regex(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/)
      .optional(),
    inRecovery: z.boolean().optional(),
  }),
  tool: z.object({ name: z.literal('pg_dump'), version: z.string(), format: z.literal('custom') }),
  object: z.object({
    key: z.string(),
    storedSize: z.number().int().nonnegative(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    plaintextSize: z.number().int().nonnegative(),
  }),
  compression: z.object({ codec: z.string(), implementation: z.string(), level: z.number().int() }),
  encryption: z.object({
    cipher: z.string(),
    recipients: z.array(z.object({ fingerprint: z.string(), encryptionKeyIds: z.array(z.string()) })).min(1),
  }),
  /** Fingerprint of the key that signed this manifest (`<manifest>.sig`); absent when unsigned. */
  signer: z.string().optional(),
});
export type DumpManifest = z.infer<typeof dumpManifestSchema>;

export function serializeManifest(m: DumpManifest): Buffer {
  return Buffer.from(JSON.stringify(dumpManifestSchema.parse(m), null, 2) + '\n');
}

export function parseManifest(raw: Buffer | string, key: string): DumpManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(raw.toString());
  } catch {
    throw new DbcrateError(ErrorCodes.INTEGRITY, `manifest ${key} is not valid JSON`, {
      hint: 'the manifest is damaged; restore another snapshot',
    });
  }
  const r = dumpManifestSchema.safeParse(doc);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      `manifest ${key} is not a dbcrate v${MANIFEST_VERSION} dump manifest (${i.path.join('.')}: ${i.message})`,
      { hint: 'it may come from a newer dbcrate; upgrade, or restore another snapshot' },
    );
  }
  return r.data;
}
