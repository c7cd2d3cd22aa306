import { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes, MeterStream, logger } from '@dbcrate/core';
import { getCodec } from '@dbcrate/compression';
import { getCipher } from '@dbcrate/crypto';
import {
  DBCRATE_VERSION,
  snapshotIdFor,
  storeToolOutput,
  validateDatabaseId,
  type ToolRun,
  describeEncoding,
} from '@dbcrate/plumbing';
import { connect } from '@dbcrate/postgres';
import {
  BASE_MANIFEST_FORMAT,
  type BaseFileEntry,
  type BaseManifestV2,
  type BaseObject,
} from './base.manifest';
import {
  backupWalFiles,
  checkBackupable,
  physicalServerInfo,
  type BaseBackupOptions,
  type BaseBackupResult,
} from './basebackup.pipeline';
import { commitBaseManifest } from './base.commit';
import {
  distributeFiles,
  listDataDirectory,
  memoryMember,
  postgresBackupManifest,
  readFileMember,
  type StoredFile,
} from './pgdata.files';
import { defaultManifestChecksum } from './pgdata.checksum';
import {
  backupStart,
  backupStop,
  checkpointTimeline,
  probeDataDirectory,
  requireFullPageWrites,
  type StopResult,
} from './pgdata.session';
import { partSealer } from './pgdata.seal';
import { TAR_END, tarHeader } from './pgdata.tar';
import { baseBackupKeys, baseBackupPartKey, ensureClusterIdentity } from './pitr.layout';
import { parseBackupLabel } from './tar.scanner';
import { awaitArchivedWal, DEFAULT_ARCHIVE_TIMEOUT, validateArchiveTimeout } from './wal.await';
import { formatLsn, parseLsn } from './wal.names';

/** Test hooks, to make races deterministic. */
export interface PgdataHooks {
  /** Before a file is opened (it may be removed or truncated here). */
  beforeFile?: (relPath: string) => Promise<void> | void;
  /** After a file was opened and its size taken (it may be truncated or extended here). */
  afterOpen?: (relPath: string) => Promise<void> | void;
  /** After every file was read, before pg_backup_stop. */
  beforeStop?: () => Promise<void> | void;
  /** Replaces the wait for the stop WAL file in the destination (a test server archiving elsewhere). */
  archived?: (walFile: string) => Promise<void>;
}

export interface PgdataBackupOptions extends BaseBackupOptions {
  /** Parts written at once (default 2). */
  parallel?: number;
  /** The data directory (default: the server's `data_directory`). */
  pgdata?: string;
  /** Seconds to wait for the stop WAL file to be in the destination's archive (default 60). */
  archiveTimeout?: number;
  hooks?: PgdataHooks;
}

export const DEFAULT_PARALLEL = 2;

function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/**
 * A base backup read straight from the data directory: pg_backup_start on one session held
 * for the whole backup, the files in `parallel` tar parts (each its own zstd → OpenPGP →
 * storage object, all at once), pg_backup_stop, then backup_label, tablespace_map and a
 * PostgreSQL backup_manifest as the last members of the last part, then the signed manifest.
 * Needs the WAL up to stopWalFile from the archive, like the pg_basebackup method.
 */
export async function runPgdataBackup(opts: PgdataBackupOptions): Promise<BaseBackupResult<BaseManifestV2>> {
  if (opts.recipients.length === 0) {
    throw new DbcrateError(ErrorCodes.CONFIG, 'no recipient public key given', {
      hint: 'pass --recipient FILE (the organisation public key, e.g. from `dbcrate keys generate`)',
    });
  }
  const log = logger();
  const parallel = opts.parallel ?? DEFAULT_PARALLEL;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 64) {
    throw new DbcrateError(ErrorCodes.USAGE, `--parallel must be between 1 and 64, not ${parallel}`);
  }
  const archiveTimeout = validateArchiveTimeout(opts.archiveTimeout ?? DEFAULT_ARCHIVE_TIMEOUT);
  const level = opts.compression?.level ?? 3;
  const codec = getCodec('zstd', { implementation: opts.compression?.implementation ?? 'auto' });
  const cipher = getCipher('openpgp');
  // The zstd workers asked for, shared by the parts (at least one each, none if 0 was asked).
  const asked = opts.compression?.threads ?? parallel;
  const threads = asked === 0 ? 0 : Math.max(1, Math.round(asked / parallel));

  const client = await connect(opts.dbUrl);
  let inBackup = false;
  try {
    const info = await physicalServerInfo(client);
    checkBackupable(info);
    await requireFullPageWrites(client);
    const probe = await probeDataDirectory(client, info.systemIdentifier, opts.pgdata);
    if ('reason' in probe) {
      throw new DbcrateError(
        'mismatch' in probe && probe.mismatch ? ErrorCodes.CLUSTER_MISMATCH : ErrorCodes.CONFIG,
        `cannot back up the data directory: ${probe.reason}`,
        {
          hint: probe.mismatch
            ? 'give the data directory of the server you connect to (--pgdata), or connect to the right server'
            : 'run dbcrate on the database host as the postgres user (or root), or use --method pg_basebackup',
        },
      );
    }
    const dataDir = probe.dir;
    const databaseId = validateDatabaseId(opts.databaseId ?? info.systemIdentifier);
    await ensureClusterIdentity(opts.storage, databaseId, {
      systemIdentifier: info.systemIdentifier,
      walSegmentSize: info.walSegmentSize,
    });

    const started = (opts.now ?? (() => new Date()))();
    const backupId = snapshotIdFor(started);
    const keys = baseBackupKeys(databaseId, backupId);
    const ownDirs = [`${databaseId}/base/${backupId}`, `${databaseId}/base`];
    const partKeys = Array.from({ length: parallel }, (_, k) => baseBackupPartKey(databaseId, backupId, k));
    log.info(
      { databaseId, backupId, dataDir, parallel, server: info.version },
      'base backup started (pgdata)',
    );

    await backupStart(client, info, `dbcrate ${backupId}`);
    inBackup = true;
    const entries = await listDataDirectory(dataDir);
    const parts = distributeFiles(entries, parallel);
    const sealers = await Promise.all(
      parts.map(() => partSealer(codec, cipher, { level, threads, recipients: opts.recipients })),
    );
    const owner = entries.find((e) => e.path === 'global') ?? entries[0];
    const { algorithm: checksum, fallback } = defaultManifestChecksum();
    if (fallback)
      log.warn({ reason: fallback }, 'backup_manifest checksums are SHA-256 (slower than CRC-32C)');
    log.debug({ manifestChecksum: checksum }, 'backup_manifest checksum');

    const progress = opts.progress?.(
      'basebackup',
      entries.reduce((n, e) => n + e.size, 0),
    );
    const stored = new Map<number, StoredFile & { part: number }>();
    const readDone = parts.map(() => deferred<void>());
    const stopped = deferred<{ stop: StopResult; lastMembers: StoredFile[] }>();
    const abort = new AbortController();
    const onOuterAbort = () => abort.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onOuterAbort, { once: true });
    const aborted = new Promise<never>((_, reject) =>
      abort.signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true }),
    );
    aborted.catch(() => undefined);
    let fileIndex = 0;
    // The first failure is the cause: the parts aborted after it only say "interrupted".
    let firstError: unknown;
    let readBytes = 0;

    async function* partStream(k: number): AsyncGenerator<Buffer> {
      try {
        for (const e of parts[k]) {
          if (e.type === 'dir') {
            yield tarHeader(e);
            continue;
          }
          await opts.hooks?.beforeFile?.(e.path);
          const index = fileIndex++;
          const file = yield* readFileMember(e, {
            checksum,
            afterOpen: opts.hooks?.afterOpen,
            reuse: sealers[k]?.readBuffer,
          });
          readBytes += file?.size ?? 0;
          progress?.update(readBytes);
          if (file) stored.set(index, { ...file, part: k });
          else log.debug({ path: e.path }, 'file vanished during the base backup: skipped');
          if (file?.changed)
            log.debug({ path: e.path, changed: file.changed }, 'file changed size while read');
        }
        readDone[k].resolve();
      } catch (err) {
        readDone[k].reject(err);
        throw err;
      }
      if (k !== parts.length - 1) {
        yield TAR_END;
        return;
      }
      // The last part stays open until every part has read its files and the backup stopped.
      const { lastMembers } = await Promise.race([stopped.promise, aborted]);
      for (const f of lastMembers) {
        const body = lastBodies.get(f.path)!;
        for (const c of memoryMember(f.path, body, owner, f.mtime, checksum).chunks) yield c;
      }
      yield TAR_END;
    }
    const lastBodies = new Map<string, Buffer>();

    const stopWhenRead = (async () => {
      await Promise.race([Promise.all(readDone.map((d) => d.promise)), aborted]);
      await opts.hooks?.beforeStop?.();
      const stop = await backupStop(client, info);
      inBackup = false;
      const label = parseBackupLabel(stop.labelfile);
      if (!label.startLsn || !label.timeline) {
        throw new DbcrateError(
          ErrorCodes.INTERNAL,
          'pg_backup_stop returned a backup_label without its start',
        );
      }
      const now = Math.floor(Date.now() / 1000);
      const members: StoredFile[] = [];
      const add = (rel: string, body: Buffer) => {
        lastBodies.set(rel, body);
        members.push(memoryMember(rel, body, owner, now, checksum).file);
      };
      add('backup_label', Buffer.from(stop.labelfile));
      if (stop.spcmapfile) add('tablespace_map', Buffer.from(stop.spcmapfile));
      const files = [...[...stored.values()], ...members];
      add(
        'backup_manifest',
        postgresBackupManifest(
          files,
          {
            timeline: label.timeline,
            startLsn: label.startLsn,
            stopLsn: formatLsn(parseLsn(stop.lsn)),
          },
          checksum,
        ),
      );
      stopped.resolve({ stop, lastMembers: members });
      return { stop, label, members };
    })();
    stopWhenRead.catch((e: unknown) => {
      firstError ??= e;
      stopped.reject(e);
      abort.abort(e);
    });

    const plain = parts.map(() => new MeterStream(undefined, { hash: false }));
    const results = await Promise.allSettled(
      parts.map(async (_, k) => {
        const sealer = sealers[k];
        const source = sealer ? sealer.seal(partStream(k)) : partStream(k);
        const stdout = Readable.from(source, { objectMode: false, highWaterMark: 4 * 1024 * 1024 });
        const tool = {
          stdout,
          exited: Promise.resolve(),
          kill: () => stdout.destroy(),
          stderrTail: () => '',
        } as unknown as ToolRun;
        try {
          return await storeToolOutput({
            tool,
            stages: sealer
              ? []
              : [plain[k], codec.compressor({ level, threads }), cipher.encryptor(opts.recipients)],
            storage: opts.storage,
            key: partKeys[k],
            signal: abort.signal,
            what: 'base backup',
          });
        } catch (e) {
          firstError ??= e;
          abort.abort(e);
          throw e;
        }
      }),
    );
    const failed = results.some((r) => r.status === 'rejected');
    const done = failed
      ? undefined
      : await stopWhenRead
          .then(async (d) => {
            const stopTimeline = info.inRecovery
              ? await checkpointTimeline(client, d.label.timeline!)
              : d.label.timeline!;
            const walFiles = backupWalFiles(
              {
                timeline: d.label.timeline!,
                stopTimeline,
                startLsn: parseLsn(d.label.startLsn!),
                stopLsn: parseLsn(formatLsn(parseLsn(d.stop.lsn))),
              },
              info.walSegmentSize,
            );
            await (opts.hooks?.archived?.(walFiles.stopWalFile) ??
              awaitArchivedWal({
                storage: opts.storage,
                databaseId,
                walFile: walFiles.stopWalFile,
                timeoutSeconds: archiveTimeout,
                signal: opts.signal,
              }));
            return { ...d, walFiles };
          })
          .catch((e: unknown) => ((firstError ??= e), undefined));
    opts.signal?.removeEventListener('abort', onOuterAbort);
    if (failed || !done) {
      for (const k of partKeys) await opts.storage.delete(k).catch(() => undefined);
      for (const d of ownDirs) await opts.storage.removeEmptyDir?.(d).catch(() => undefined);
      if (opts.signal?.aborted) {
        throw new DbcrateError(ErrorCodes.INTERRUPTED, 'base backup interrupted; nothing was kept');
      }
      throw firstError ?? new DbcrateError(ErrorCodes.INTERNAL, 'the base backup failed');
    }
    const { stop, label, members, walFiles } = done;
    const objects: BaseObject[] = results.map((r, k) => {
      const meter = (r as PromiseFulfilledResult<MeterStream>).value;
      return {
        key: partKeys[k],
        storedSize: meter.bytes,
        sha256: meter.sha256(),
        plaintextSize: sealers[k]?.plainBytes ?? plain[k].bytes,
      };
    });
    const files: BaseFileEntry[] = [
      ...[...stored.entries()].sort((a, b) => a[0] - b[0]).map(([, f]) => f),
      ...members.map((f) => ({ ...f, part: parallel - 1 })),
    ].map(({ path: p, size, mtime, part, changed }) => ({
      path: p,
      size,
      mtime,
      part,
      ...(changed ? { changed } : {}),
    }));

    const startLsn = label.startLsn!;
    const stopLsn = formatLsn(parseLsn(stop.lsn));
    const manifest: BaseManifestV2 = {
      format: BASE_MANIFEST_FORMAT,
      formatVersion: 2,
      kind: 'physical',
      databaseId,
      backupId,
      dbcrateVersion: DBCRATE_VERSION,
      startedAt: started.toISOString(),
      finishedAt: new Date().toISOString(),
      startLsn,
      stopLsn,
      timeline: label.timeline!,
      ...walFiles,
      server: {
        version: info.version,
        versionNum: info.versionNum,
        major: info.major,
        systemIdentifier: info.systemIdentifier,
      },
      walSegmentSize: info.walSegmentSize,
      tool: { name: 'dbcrate', version: DBCRATE_VERSION },
      objects,
      files,
      ...describeEncoding(codec, level, cipher, opts.recipients),
      tablespaces: info.tablespaces.map((t) => ({ oid: t.oid, name: t.name, location: t.location })),
      ...(opts.signingKey ? { signer: opts.signingKey.fingerprint } : {}),
    };
    const sigKey = await commitBaseManifest({
      storage: opts.storage,
      manifest,
      manifestKey: keys.manifestKey,
      dataKeys: partKeys,
      ownDirs,
      signingKey: opts.signingKey,
    });
    const storedBytes = objects.reduce((n, o) => n + o.storedSize, 0);
    progress?.done({ backupId, storedBytes });
    log.info(
      {
        backupId,
        startLsn,
        stopLsn,
        timeline: manifest.timeline,
        files: files.length,
        parts: parallel,
        plaintextBytes: objects.reduce((n, o) => n + o.plaintextSize, 0),
        storedBytes,
      },
      'base backup finished',
    );
    return {
      manifest,
      dataKey: partKeys[0],
      dataKeys: partKeys,
      manifestKey: keys.manifestKey,
      ...(sigKey ? { signatureKey: sigKey } : {}),
    };
  } finally {
    // A non-exclusive backup ends with its session: closing it aborts one still running.
    if (inBackup) log.debug('closing the backup session: the server ends the backup');
    await client.end().catch(() => undefined);
  }
}
