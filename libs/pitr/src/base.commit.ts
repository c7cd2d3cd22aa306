import { Readable } from 'node:stream';
import { ErrorCodes } from '@dbcrate/core';
import { signDetached, type SigningKey } from '@dbcrate/crypto';
import { signatureKey } from '@dbcrate/plumbing';
import type { Storage } from '@dbcrate/storage';
import { serializeBaseManifest, type BaseManifest } from './base.manifest';

/**
 * Write a base backup's manifest, the signature first: the manifest, written last, is what
 * makes a base backup. On failure the data objects and their folders are removed again.
 * Returns the signature's key when signed.
 */
export async function commitBaseManifest(c: {
  storage: Storage;
  manifest: BaseManifest;
  manifestKey: string;
  dataKeys: string[];
  ownDirs: string[];
  signingKey?: SigningKey;
}): Promise<string | undefined> {
  const body = serializeBaseManifest(c.manifest);
  const sigKey = c.signingKey ? signatureKey(c.manifestKey) : undefined;
  let sigWritten = false;
  try {
    if (c.signingKey && sigKey) {
      const sig = await signDetached(body, c.signingKey);
      await c.storage.put(sigKey, Readable.from([Buffer.from(sig)]), { ifNotExists: true });
      sigWritten = true;
    }
    await c.storage.put(c.manifestKey, Readable.from([body]), { ifNotExists: true });
  } catch (e) {
    // No manifest, no backup. A put can fail after it committed (the answer was lost): the
    // manifest goes first, unless the name was another writer's.
    if ((e as { code?: string }).code !== ErrorCodes.STORAGE_CONFLICT) {
      await c.storage.delete(c.manifestKey).catch(() => undefined);
    }
    for (const k of c.dataKeys) await c.storage.delete(k).catch(() => undefined);
    if (sigWritten && sigKey) await c.storage.delete(sigKey).catch(() => undefined);
    for (const d of c.ownDirs) await c.storage.removeEmptyDir?.(d).catch(() => undefined);
    throw e;
  }
  return sigKey;
}
