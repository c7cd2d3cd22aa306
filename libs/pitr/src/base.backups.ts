import { chmod, chown, lstat, mkdir, readdir, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BufferPool, DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import { getCodec } from '@dbcrate/compression';
import {
  getCipher,
  untrustedError,
  verifyDetached,
  type DecryptionKey,
  type TrustPolicy,
} from '@dbcrate/crypto';
import {
  devNull,
  SIGNATURE_SUFFIX,
  snapshotTime,
  validateDatabaseId,
  VerifyStream,
  type ProgressSink,
} from '@dbcrate/plumbing';
import { readObject, type Storage } from '@dbcrate/storage';
import { baseObjects, baseStoredSize, parseBaseManifest, type BaseManifest } from './base.manifest';
import { BASE_DIR, parseBaseKey } from './pitr.layout';
import { checkListing, extractTar, makeParentDirs, undoExtract } from './base.extract';
import { TarGuard } from './tar.guard';
import { parseLsn } from './wal.names';

export type BaseBackupStatus = 'complete' | 'incomplete' | 'damaged' | 'untrusted';

export interface BaseBackupEntry {
  databaseId: string;
  backupId: string;
  time: Date;
  /** complete: manifest and data agree; incomplete: data without manifest (never used); damaged: manifest without matching data, or unreadable. */
  status: BaseBackupStatus;
  reason?: string;
  /** Fingerprint of the trusted signer whose signature of the manifest was checked. */
  signer?: string;
  /** The (first) data object, and the stored bytes of all of them. */
  dataKey?: string;
  dataSize?: number;
  /** Every data object found (a pgdata backup has one per part). */
  dataObjects?: { key: string; size: number }[];
  manifestKey?: string;
  manifest?: BaseManifest;
}

export interface ListBaseBackupsOptions {
  /** Check each manifest's signature: a complete backup not signed by a trusted signer is `untrusted`. */
  trust?: TrustPolicy;
}

/**
 * Every base backup of one database id, oldest first (by start time, then start LSN),
 * each with its status; only `complete` ones may be restored.
 */
export async function listBaseBackups(
  storage: Storage,
  databaseId: string,
  opts: ListBaseBackupsOptions = {},
): Promise<BaseBackupEntry[]> {
  const prefix = `${validateDatabaseId(databaseId)}/${BASE_DIR}/`;
  const byId = new Map<string, BaseBackupEntry>();
  const signatures = new Set<string>();
  for await (const obj of storage.list(prefix)) {
    if (obj.key.endsWith(SIGNATURE_SUFFIX)) signatures.add(obj.key);
    const parsed = parseBaseKey(obj.key);
    if (!parsed || parsed.databaseId !== databaseId) continue;
    let e = byId.get(parsed.backupId);
    if (!e) {
      e = {
        databaseId,
        backupId: parsed.backupId,
        time: snapshotTime(parsed.backupId)!,
        status: 'incomplete',
      };
      byId.set(parsed.backupId, e);
    }
    if (parsed.kind === 'manifest') e.manifestKey = obj.key;
    else {
      e.dataObjects = [...(e.dataObjects ?? []), { key: obj.key, size: obj.size }].sort((a, b) =>
        a.key.localeCompare(b.key, 'en', { numeric: true }),
      );
      e.dataKey = e.dataObjects[0].key;
      e.dataSize = e.dataObjects.reduce((n, o) => n + o.size, 0);
    }
  }
  const entries = [...byId.values()];
  for (const e of entries) {
    if (!e.manifestKey) {
      e.status = 'incomplete';
      e.reason = 'no manifest: the base backup did not finish';
      continue;
    }
    let raw: Buffer;
    try {
      raw = await readObject(storage, e.manifestKey);
      e.manifest = parseBaseManifest(raw, e.manifestKey);
    } catch (err) {
      e.status = 'damaged';
      e.reason = (err as Error).message;
      continue;
    }
    if (e.manifest.databaseId !== databaseId || e.manifest.backupId !== e.backupId) {
      e.status = 'damaged';
      e.reason = `manifest names ${e.manifest.databaseId}/${e.manifest.backupId}, not ${databaseId}/${e.backupId}`;
    } else if ((e.reason = objectsMismatch(baseObjects(e.manifest), e.dataObjects ?? []))) {
      e.status = 'damaged';
    } else {
      e.status = 'complete';
      if (opts.trust) {
        const sigKey = e.manifestKey + SIGNATURE_SUFFIX;
        const sig = signatures.has(sigKey) ? (await readObject(storage, sigKey)).toString('utf8') : undefined;
        const v = await verifyDetached(raw, sig, opts.trust);
        if (v.trusted) e.signer = v.signer;
        else {
          e.status = 'untrusted';
          e.reason = v.reason;
        }
      }
    }
  }
  const lsnOf = (e: BaseBackupEntry) => (e.manifest ? parseLsn(e.manifest.startLsn) : 0n);
  return entries.sort((a, b) => {
    const byTime = a.time.getTime() - b.time.getTime();
    if (byTime !== 0) return byTime;
    const la = lsnOf(a);
    const lb = lsnOf(b);
    return la < lb ? -1 : la > lb ? 1 : a.backupId.localeCompare(b.backupId);
  });
}

/** Why the stored objects do not match the manifest's, or undefined when they do. */
function objectsMismatch(
  wanted: { key: string; storedSize: number }[],
  found: { key: string; size: number }[],
): string | undefined {
  for (const w of wanted) {
    const f = found.find((o) => o.key === w.key);
    if (!f) return `data object ${w.key} is missing`;
    if (f.size !== w.storedSize)
      return `data object ${w.key} has ${f.size} bytes, manifest records ${w.storedSize}`;
  }
  return undefined;
}

/** The manifests of the complete base backups of a database id, oldest first. */
export async function completeBaseBackups(
  storage: Storage,
  databaseId: string,
  opts: ListBaseBackupsOptions = {},
): Promise<BaseManifest[]> {
  return (await listBaseBackups(storage, databaseId, opts))
    .filter((e) => e.status === 'complete')
    .map((e) => e.manifest!);
}

/**
 * The base backups recovery may use: complete and, with a trust policy, signed by a trusted
 * signer. Refuses (E_UNTRUSTED) when the one asked for, or every complete one, is untrusted;
 * untrusted ones beside usable ones are skipped with a warning.
 */
export async function usableBaseBackups(
  storage: Storage,
  databaseId: string,
  opts: ListBaseBackupsOptions & { backupId?: string } = {},
): Promise<BaseManifest[]> {
  const all = await listBaseBackups(storage, databaseId, opts);
  const untrusted = all.filter((e) => e.status === 'untrusted');
  const asked = opts.backupId ? untrusted.find((e) => e.backupId === opts.backupId) : undefined;
  if (asked) throw untrustedError(`base backup ${asked.backupId}`, asked.reason ?? 'unsigned');
  const usable = all.filter((e) => e.status === 'complete').map((e) => e.manifest!);
  if (usable.length === 0 && untrusted.length > 0) {
    const newest = untrusted.at(-1)!;
    throw untrustedError(
      `base backup ${newest.backupId}${untrusted.length > 1 ? ` (and ${untrusted.length - 1} more)` : ''}`,
      newest.reason ?? 'unsigned',
    );
  }
  for (const e of untrusted) {
    logger().warn({ backupId: e.backupId, reason: e.reason }, 'skipping an untrusted base backup');
  }
  return usable;
}

export interface RestoreBaseBackupOptions {
  storage: Storage;
  manifest: BaseManifest;
  keys: DecryptionKey[];
  /** An empty directory, or a new one (its parent must exist); ends up mode 0700. */
  targetDir: string;
  signal?: AbortSignal;
  progress?: (phase: string, total?: number) => ProgressSink;
  /** GNU tar to run (default `tar` from PATH). */
  tarPath?: string;
  /** Called once the checks have passed, just before extraction starts (e.g. to start fetching WAL). */
  onExtract?: () => void;
}

export interface RestoreBaseBackupResult {
  manifest: BaseManifest;
  targetDir: string;
  seconds: number;
}

/** The key must be one the backup was encrypted to; say which ones it was, before downloading anything. */
function checkKeyMatches(m: BaseManifest, keys: DecryptionKey[]): void {
  const wanted = m.encryption.recipients.map((r) => r.fingerprint.toUpperCase());
  const wantedIds = m.encryption.recipients.flatMap((r) => r.encryptionKeyIds.map((i) => i.toUpperCase()));
  const have = keys.map((k) => k.fingerprint.toUpperCase());
  const haveIds = keys.flatMap((k) => k.keyIds.map((i) => i.toUpperCase()));
  if (!have.some((f) => wanted.includes(f)) && !haveIds.some((i) => wantedIds.some((w) => w.endsWith(i)))) {
    throw new DbcrateError(
      ErrorCodes.WRONG_KEY,
      `base backup ${m.backupId} was encrypted to ${wanted.join(', ')}; the key given is ${have.join(', ') || 'none'}`,
      { hint: 'pass --key with the private key of one of those fingerprints' },
    );
  }
}

/** Check the target before any download: a missing directory (parent present) or an empty one. */
async function inspectTarget(dir: string): Promise<{ exists: boolean }> {
  let st;
  try {
    st = await stat(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw targetError(dir, e);
    const parent = path.dirname(dir);
    const pst = await stat(parent).catch(() => undefined);
    if (!pst?.isDirectory()) {
      throw new DbcrateError(
        ErrorCodes.USAGE,
        `cannot restore into ${dir}: its parent directory ${parent} does not exist`,
        { hint: `create ${parent} first, or choose another target directory` },
      );
    }
    return { exists: false };
  }
  if (!st.isDirectory()) {
    throw new DbcrateError(ErrorCodes.TARGET_NOT_EMPTY, `cannot restore into ${dir}: it is not a directory`, {
      hint: 'give an empty directory, or a path that does not exist yet',
    });
  }
  const entries = await readdir(dir).catch((e: unknown) => {
    throw targetError(dir, e);
  });
  if (entries.length > 0) {
    const shown = entries.slice(0, 5).join(', ') + (entries.length > 5 ? ', …' : '');
    throw new DbcrateError(
      ErrorCodes.TARGET_NOT_EMPTY,
      `refusing to restore into ${dir}: it is not empty (${shown})`,
      { hint: 'restore into an empty directory or a new path; dbcrate never overwrites a data directory' },
    );
  }
  return { exists: true };
}

function targetError(dir: string, e: unknown): DbcrateError {
  const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  return new DbcrateError(ErrorCodes.USAGE, `cannot use ${dir} as the restore target: ${code}`, {
    hint: 'check the path and its permissions',
    cause: e,
  });
}

/**
 * Restore a base backup into an empty (or new) directory: first check every stored object's
 * size and sha256 against the manifest, then stream them again through the same check,
 * decryption and decompression into `tar -x` (one per part, in parallel), and check the
 * file listing of a version 2 manifest. Nothing is extracted from an object that
 * fails the first check; anything extracted is removed again on any failure.
 */
/** Decompressed plaintext moves to tar in buffers of this size. */
const DECOMPRESS_CHUNK = 256 * 1024;

export async function restoreBaseBackup(opts: RestoreBaseBackupOptions): Promise<RestoreBaseBackupResult> {
  const log = logger();
  const t0 = Date.now();
  const m = opts.manifest;
  const dir = path.resolve(opts.targetDir);
  const outside = m.tablespaces.filter((t) => t.location !== '');
  if (outside.length > 0) {
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `base backup ${m.backupId} lists tablespaces outside the data directory (${outside.map((t) => t.name).join(', ')}), which this dbcrate cannot restore`,
      { hint: 'upgrade dbcrate' },
    );
  }
  checkKeyMatches(m, opts.keys);
  const codec = getCodec(m.compression.codec, { implementation: 'auto' });
  const cipher = getCipher(m.encryption.cipher);
  await inspectTarget(dir);
  const objects = baseObjects(m);
  const total = baseStoredSize(m);
  const interrupted = () =>
    new DbcrateError(ErrorCodes.INTERRUPTED, `restore of base backup ${m.backupId} interrupted`);

  // 1. Every stored object against the manifest, before anything reaches the disk.
  const checkProgress = opts.progress?.('verify', total);
  const checked = summed(objects.length, (n) => checkProgress?.update(n));
  try {
    await Promise.all(
      objects.map(async (o, k) =>
        pipeline(
          await opts.storage.get(o.key, { signal: opts.signal }),
          new VerifyStream({ sha256: o.sha256, size: o.storedSize, key: o.key }, (n) => checked(k, n)),
          devNull(),
          { signal: opts.signal },
        ),
      ),
    );
  } catch (e) {
    if (opts.signal?.aborted) throw interrupted();
    throw e;
  }
  checkProgress?.done({ sha256: objects.map((o) => o.sha256).join(',') });

  // 2. Extract. The target may have changed while we were verifying: look again.
  const created = !(await inspectTarget(dir)).exists;
  if (created) await mkdir(dir, { mode: 0o700 });
  if (objects.length > 1 && m.formatVersion === 2 && m.files) {
    await makeParentDirs(dir, m.backupId, m.files).catch(async (e: unknown) => {
      await undoExtract(dir, created);
      throw e;
    });
  }
  // The checks have passed and the directory is ours: work that may overlap extraction starts now.
  opts.onExtract?.();
  const progress = opts.progress?.('restore', total);
  const restored = summed(objects.length, (n) => progress?.update(n));
  // One tar per part, all at once: the parts hold disjoint files (directories only in part 0).
  const tars = objects.map(() => extractTar(opts.tarPath ?? 'tar', dir));
  // The plaintext (the whole data directory) passes through a few buffers per part.
  const pools = objects.map(() => new BufferPool(DECOMPRESS_CHUNK));
  const onAbort = () => tars.forEach((t) => t.kill());
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    let firstError: unknown;
    const note = (e: unknown) => {
      const code = (e as { code?: string })?.code;
      if (firstError === undefined && code !== 'ERR_STREAM_PREMATURE_CLOSE' && code !== 'EPIPE')
        firstError = e;
      tars.forEach((t) => t.kill());
      throw e;
    };
    const work = objects.flatMap((o, k) => {
      const chain = (async () =>
        pipeline(
          await opts.storage.get(o.key, { signal: opts.signal }),
          new VerifyStream({ sha256: o.sha256, size: o.storedSize, key: o.key }, (n) => restored(k, n)),
          cipher.decryptor(opts.keys, {
            expectedRecipients: m.encryption.recipients.map((r) => r.fingerprint),
          }),
          codec.decompressor({ pool: pools[k] }),
          // Only plain files, directories and inside symlinks reach tar, whoever made the archive.
          new TarGuard(`base backup ${m.backupId}`),
          tars[k].input(pools[k]),
          { signal: opts.signal },
        ))().catch(note);
      return [chain, tars[k].exited.catch(note)];
    });
    try {
      await Promise.all(work);
    } catch (e) {
      await Promise.allSettled(work);
      throw firstError ?? e;
    }
    if (m.formatVersion === 2 && m.files) await checkListing(dir, m.backupId, m.files);
    // A tar stream that ends early but cleanly would leave a partial directory behind.
    const version = await lstat(path.join(dir, 'PG_VERSION')).catch(() => undefined);
    if (!version?.isFile()) {
      throw new DbcrateError(
        ErrorCodes.INTEGRITY,
        `base backup ${m.backupId} did not contain PG_VERSION: it is not a PostgreSQL data directory`,
        { hint: 'use another base backup' },
      );
    }
    // PostgreSQL refuses a data directory with group/other access, or not owned by its user.
    if (process.getuid?.() === 0 && (version.uid !== 0 || version.gid !== 0)) {
      await chown(dir, version.uid, version.gid);
    }
    await chmod(dir, 0o700);
  } catch (e) {
    await undoExtract(dir, created);
    if (opts.signal?.aborted) {
      throw new DbcrateError(
        ErrorCodes.INTERRUPTED,
        `restore of base backup ${m.backupId} interrupted; ${dir} was emptied`,
      );
    }
    throw e;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
  const seconds = (Date.now() - t0) / 1000;
  progress?.done({ backupId: m.backupId });
  log.info({ backupId: m.backupId, targetDir: dir, seconds }, 'base backup restored');
  return { manifest: m, targetDir: dir, seconds };
}

/** Progress of parts read at once: each reports its own running count, the total is their sum. */
function summed(parts: number, update: (total: number) => void): (part: number, n: number) => void {
  const counts = new Array<number>(parts).fill(0);
  let total = 0;
  return (part, n) => {
    total += n - counts[part];
    counts[part] = n;
    update(total);
  };
}
