import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { DbcrateError, ErrorCodes, logger, redact } from '@dbcrate/core';
import { getCodec } from '@dbcrate/compression';
import { getCipher, type DecryptionKey } from '@dbcrate/crypto';
import type { Storage } from '@dbcrate/storage';
import {
  childEnv,
  connect,
  findClientTools,
  isDatabaseEmpty,
  isProductionTarget,
  maskConnectionString,
  serverInfo,
  toLibpqEnv,
} from '@dbcrate/postgres';
import { devNull, runTool } from './child-process.stream';
import type { DumpManifest } from './manifest';
import type { ProgressSink } from './progress';
import { resolveSnapshot } from './snapshots';
import { VerifyStream } from './verify.stream';

export interface RestoreOptions {
  storage: Storage;
  /** Snapshot id, "<database-id>/<snapshot-id>" or "latest". */
  snapshot: string;
  databaseId?: string;
  keys: DecryptionKey[];
  targetUrl: string;
  jobs?: number;
  /** Restore into a non-empty database, dropping the objects the dump contains first. */
  clean?: boolean;
  /** The target is production by configuration (in addition to dbcrate.production=on). */
  production?: boolean;
  /** Explicit consent to restore into a production target. */
  iKnow?: boolean;
  noOwner?: boolean;
  /** Where plaintext is spooled when --jobs > 1 (pg_restore needs a seekable file then). */
  spoolDir?: string;
  pgBinDir?: string;
  signal?: AbortSignal;
  progress?: (phase: string, total?: number) => ProgressSink;
}

export interface RestoreResult {
  manifest: DumpManifest;
  target: string;
  seconds: number;
}

/** The key must be one the backup was encrypted to; say which ones it was, before downloading anything. */
function checkKeyMatches(manifest: DumpManifest, keys: DecryptionKey[]): void {
  const wanted = manifest.encryption.recipients.map((r) => r.fingerprint.toUpperCase());
  const wantedIds = manifest.encryption.recipients.flatMap((r) =>
    r.encryptionKeyIds.map((i) => i.toUpperCase()),
  );
  const have = keys.map((k) => k.fingerprint.toUpperCase());
  const haveIds = keys.flatMap((k) => k.keyIds.map((i) => i.toUpperCase()));
  if (!have.some((f) => wanted.includes(f)) && !haveIds.some((i) => wantedIds.includes(i))) {
    throw new DbcrateError(
      ErrorCodes.WRONG_KEY,
      `snapshot ${manifest.snapshotId} was encrypted to ${wanted.join(', ')}; the key given is ${have.join(', ')}`,
      { hint: 'pass --key with the private key of one of those fingerprints' },
    );
  }
}

export async function runRestore(opts: RestoreOptions): Promise<RestoreResult> {
  const log = logger();
  const t0 = Date.now();
  const snap = await resolveSnapshot(opts.storage, opts.snapshot, { databaseId: opts.databaseId });
  const m = snap.manifest;
  checkKeyMatches(m, opts.keys);
  const codec = getCodec(m.compression.codec, { implementation: 'auto' });
  const cipher = getCipher(m.encryption.cipher);

  // Target checks come before any download: consent for production, emptiness unless --clean.
  const target = maskConnectionString(opts.targetUrl);
  const client = await connect(opts.targetUrl);
  let major: number;
  try {
    const info = await serverInfo(client);
    major = info.major;
    if ((opts.production || (await isProductionTarget(client))) && !opts.iKnow) {
      throw new DbcrateError(
        ErrorCodes.TARGET_PRODUCTION,
        `refusing to restore into ${target}: it is marked production`,
        {
          hint: 'if you really mean to overwrite it, add --i-know',
        },
      );
    }
    if (!opts.clean && !(await isDatabaseEmpty(client))) {
      throw new DbcrateError(
        ErrorCodes.TARGET_NOT_EMPTY,
        `refusing to restore into ${target}: the database is not empty`,
        {
          hint: 'restore into an empty database (createdb NAME), or add --clean to drop the objects the backup contains first',
        },
      );
    }
  } finally {
    await client.end().catch(() => undefined);
  }
  if (major < m.server.major) {
    log.warn(
      { from: m.server.major, to: major },
      'restoring into an older PostgreSQL major version; this may fail',
    );
  }
  const toolMajor = Math.max(major, Number.parseInt(m.tool.version.replace(/^\D*/, ''), 10) || major);
  const tools = await findClientTools(toolMajor, { binDir: opts.pgBinDir });

  // 1. Check the stored bytes against the manifest before touching the target.
  const checkProgress = opts.progress?.('verify', m.object.storedSize);
  await pipeline(
    await opts.storage.get(m.object.key, { signal: opts.signal }),
    new VerifyStream({ ...m.object, size: m.object.storedSize }, (n) => checkProgress?.update(n)),
    devNull(),
  );
  checkProgress?.done({ sha256: m.object.sha256 });

  // 2. Restore. The verify stream and the cipher's integrity check both fail before the end
  //    of input reaches pg_restore, so a changed object never commits (single transaction).
  const jobs = opts.jobs ?? 1;
  const { env, dbnameArg } = toLibpqEnv(opts.targetUrl);
  const args = ['--no-password', '--exit-on-error', `--dbname=${dbnameArg}`];
  if (opts.clean) args.push('--clean', '--if-exists');
  if (opts.noOwner) args.push('--no-owner');
  const progress = opts.progress?.('restore', m.object.storedSize);
  const source = async () =>
    [
      await opts.storage.get(m.object.key, { signal: opts.signal }),
      new VerifyStream({ ...m.object, size: m.object.storedSize }, (n) => progress?.update(n)),
      cipher.decryptor(opts.keys, { expectedRecipients: m.encryption.recipients.map((r) => r.fingerprint) }),
      codec.decompressor(),
    ] as const;

  if (jobs <= 1) {
    const restore = runTool(tools.pgRestore, [...args, '--single-transaction'], childEnv(env), {
      stdin: 'pipe',
      label: 'pg_restore',
    });
    restore.stdout.resume();
    const onAbort = () => restore.kill();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const [get, verify, decrypt, decompress] = await source();
      await Promise.all([
        pipeline(get, verify, decrypt, decompress, restore.child.stdin!).catch((e: unknown) => {
          restore.kill(); // no clean end of input: the single transaction rolls back
          throw e;
        }),
        restore.exited,
      ]);
    } catch (e) {
      restore.kill();
      throw e;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  } else {
    // Parallel pg_restore needs a seekable archive: spool the plaintext to a private temp file.
    const dir = await mkdtemp(join(opts.spoolDir ?? tmpdir(), 'dbcrate-restore-'));
    const file = join(dir, `${m.snapshotId}.dump`);
    log.warn({ file }, 'parallel restore spools the decrypted dump to local disk; it is removed afterwards');
    try {
      const [get, verify, decrypt, decompress] = await source();
      await pipeline(get, verify, decrypt, decompress, createWriteStream(file, { mode: 0o600 }));
      const restore = runTool(tools.pgRestore, [...args, `--jobs=${jobs}`, file], childEnv(env), {
        label: 'pg_restore',
      });
      restore.stdout.resume();
      await restore.exited;
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  const seconds = (Date.now() - t0) / 1000;
  progress?.done({ snapshotId: m.snapshotId });
  log.info({ snapshotId: m.snapshotId, target: redact(target), seconds }, 'restore finished');
  return { manifest: m, target, seconds };
}
