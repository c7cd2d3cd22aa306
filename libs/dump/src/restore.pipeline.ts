import { createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { pipeline } from 'node:stream/promises';
import { DbcrateError, ErrorCodes, logger, redact } from '@dbcrate/core';
import { getCodec } from '@dbcrate/compression';
import { getCipher, type DecryptionKey, type TrustPolicy } from '@dbcrate/crypto';
import type { Storage } from '@dbcrate/storage';
import {
  connect,
  findClientTools,
  isDatabaseEmpty,
  isProductionTarget,
  maskConnectionString,
  serverInfo,
  toLibpqEnv,
} from '@dbcrate/postgres';
import { devNull, runTool, type ToolRun } from '@dbcrate/plumbing';
import type { DumpManifest } from './manifest';
import type { ProgressSink } from '@dbcrate/plumbing';
import { resolveSnapshot } from './snapshots';
import { createRestoreSpool, sweepStaleSpools } from './restore.spool';
import { VerifyStream } from '@dbcrate/plumbing';

const BROKEN_PIPE = new Set([
  'EPIPE',
  'ECONNRESET',
  'ERR_STREAM_DESTROYED',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ERR_STREAM_WRITE_AFTER_END',
]);

/**
 * Run `feed` (what writes the tool's input, if anything) while the tool runs; the signal
 * kills the tool. The error reported is the real cause: the tool's own failure (e.g. a
 * missing role) when it died first, not the broken pipe its input then saw; the input's
 * failure (integrity, decryption) when that came first, not the kill that followed.
 */
async function withTool(
  tool: ToolRun,
  signal: AbortSignal | undefined,
  interrupted: () => Error,
  feed: () => Promise<void>,
): Promise<void> {
  const onAbort = () => tool.kill();
  signal?.addEventListener('abort', onAbort, { once: true });
  let feedError: unknown;
  let toolError: unknown;
  try {
    await Promise.all([
      feed().catch((e: unknown) => {
        feedError = e;
        tool.kill();
      }),
      tool.exited.catch((e: unknown) => {
        toolError = e;
      }),
    ]);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  // A signal that came after pg_restore finished cleanly interrupted nothing: the restore is
  // complete, and saying otherwise would send the user to redo it.
  if (signal?.aborted && (feedError !== undefined || toolError !== undefined)) throw interrupted();
  const brokenPipe = BROKEN_PIPE.has((feedError as { code?: string } | undefined)?.code ?? '');
  if (feedError !== undefined && !(brokenPipe && toolError !== undefined)) throw feedError;
  if (toolError !== undefined) throw toolError;
}

export interface RestoreOptions {
  storage: Storage;
  /** Snapshot id, "<database-id>/<snapshot-id>" or "latest". */
  snapshot: string;
  databaseId?: string;
  keys: DecryptionKey[];
  /** Signers to trust; without it signatures are not checked (the CLI always gives one). */
  trust?: TrustPolicy;
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
  // Decrypted spools of killed parallel restores go at the next restore, whatever its --jobs.
  sweepStaleSpools(opts.spoolDir ?? tmpdir());
  const snap = await resolveSnapshot(opts.storage, opts.snapshot, {
    databaseId: opts.databaseId,
    trust: opts.trust,
  });
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
  if (opts.signal?.aborted)
    throw new DbcrateError(ErrorCodes.INTERRUPTED, `restore of ${m.snapshotId} interrupted`);
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

  const interrupted = () =>
    new DbcrateError(ErrorCodes.INTERRUPTED, `restore of ${m.snapshotId} interrupted`, {
      hint:
        jobs <= 1
          ? 'nothing was committed (single transaction); the target is as it was'
          : 'the parallel restore may have created some objects; drop and recreate the target database before retrying',
    });

  if (jobs <= 1) {
    const restore = runTool(tools.pgRestore, [...args, '--single-transaction'], env, {
      stdin: 'pipe',
      label: 'pg_restore',
    });
    restore.stdout.resume();
    await withTool(restore, opts.signal, interrupted, async () => {
      const [get, verify, decrypt, decompress] = await source();
      // On an error the tool is killed: no clean end of input, the single transaction rolls back.
      await pipeline(get, verify, decrypt, decompress, restore.child.stdin!);
    });
  } else {
    // Parallel pg_restore needs a seekable archive: spool the plaintext to a private temp file,
    // removed whatever happens (see createRestoreSpool).
    const spool = await createRestoreSpool(opts.spoolDir ?? tmpdir(), `${m.snapshotId}.dump`);
    log.warn(
      { file: spool.file },
      'parallel restore spools the decrypted dump to local disk; it is removed afterwards',
    );
    try {
      const [get, verify, decrypt, decompress] = await source();
      try {
        await pipeline(
          get,
          verify,
          decrypt,
          decompress,
          createWriteStream(spool.file, { mode: 0o600 }),
          opts.signal ? { signal: opts.signal } : {},
        );
      } catch (e) {
        if (opts.signal?.aborted) throw interrupted();
        throw e;
      }
      if (opts.signal?.aborted) throw interrupted();
      const restore = runTool(tools.pgRestore, [...args, `--jobs=${jobs}`, spool.file], env, {
        label: 'pg_restore',
      });
      restore.stdout.resume();
      await withTool(restore, opts.signal, interrupted, async () => undefined);
    } finally {
      await spool.remove();
    }
  }
  const seconds = (Date.now() - t0) / 1000;
  progress?.done({ snapshotId: m.snapshotId });
  log.info({ snapshotId: m.snapshotId, target: redact(target), seconds }, 'restore finished');
  return { manifest: m, target, seconds };
}
