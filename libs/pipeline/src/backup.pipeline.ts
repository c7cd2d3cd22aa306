import { pipeline } from 'node:stream/promises';
import { DbcrateError, ErrorCodes, MeterStream, logger } from '@dbcrate/core';
import { getCodec, type ZstdImplementation } from '@dbcrate/compression';
import { getCipher, type RecipientKey } from '@dbcrate/crypto';
import type { Storage } from '@dbcrate/storage';
import { childEnv, connect, findClientTools, serverInfo, toLibpqEnv } from '@dbcrate/postgres';
import { runTool } from './child-process.stream';
import { defaultDatabaseId, dumpKeys, snapshotIdFor, validateDatabaseId } from './layout';
import { serializeManifest, MANIFEST_FORMAT, MANIFEST_VERSION, type DumpManifest } from './manifest';
import type { ProgressSink } from './progress';
import { DBCRATE_VERSION } from './version';
import { Readable } from 'node:stream';

export interface BackupOptions {
  dbUrl: string;
  storage: Storage;
  recipients: RecipientKey[];
  databaseId?: string;
  compression?: { level?: number; threads?: number; implementation?: ZstdImplementation };
  pgBinDir?: string;
  signal?: AbortSignal;
  progress?: (phase: string, total?: number) => ProgressSink;
  now?: () => Date;
}

export interface BackupResult {
  manifest: DumpManifest;
  dataKey: string;
  manifestKey: string;
}

/**
 * pg_dump -Fc -Z0 → zstd → OpenPGP → storage, streamed end to end, then the manifest.
 * The data object only becomes visible once the whole stream has been stored and
 * pg_dump has exited 0; the manifest (what makes it a backup) is written after that.
 */
export async function runBackup(opts: BackupOptions): Promise<BackupResult> {
  if (opts.recipients.length === 0) {
    throw new DbcrateError(ErrorCodes.CONFIG, 'no recipient public key given', {
      hint: 'pass --recipient FILE (the organisation public key, e.g. from `dbcrate keys generate`)',
    });
  }
  const log = logger();
  const level = opts.compression?.level ?? 3;
  const codec = getCodec('zstd', { implementation: opts.compression?.implementation ?? 'auto' });
  const cipher = getCipher('openpgp');

  const client = await connect(opts.dbUrl);
  let info;
  try {
    info = await serverInfo(client);
  } finally {
    await client.end().catch(() => undefined);
  }
  const tools = await findClientTools(info.major, { binDir: opts.pgBinDir });
  const databaseId = opts.databaseId
    ? validateDatabaseId(opts.databaseId)
    : defaultDatabaseId(info.databaseName);
  const started = (opts.now ?? (() => new Date()))();
  const snapshotId = snapshotIdFor(started);
  const keys = dumpKeys(databaseId, snapshotId, [codec.extension, cipher.extension]);
  log.info({ databaseId, snapshotId, key: keys.dataKey, server: info.version }, 'backup started');

  const { env, dbnameArg } = toLibpqEnv(opts.dbUrl);
  const dump = runTool(
    tools.pgDump,
    ['--format=custom', '--compress=0', '--no-password', `--dbname=${dbnameArg}`],
    childEnv(env),
    {
      label: 'pg_dump',
    },
  );
  const progress = opts.progress?.('backup');
  const plain = new MeterStream((n) => progress?.update(n), { hash: false });
  const stored = new MeterStream();
  const abort = new AbortController();
  const onOuterAbort = () => abort.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onOuterAbort, { once: true });

  // The chain feeding storage; an error anywhere aborts the upload, so no partial object remains.
  // Several parts fail together when one does; report the first real cause, not the
  // "premature close" the others see as a consequence.
  let firstError: unknown;
  const note = (e: unknown) => {
    const code = (e as { code?: string })?.code;
    if (firstError === undefined && code !== 'ERR_STREAM_PREMATURE_CLOSE' && code !== 'ABORT_ERR')
      firstError = e;
    abort.abort(e);
    throw e;
  };
  const chainDone = pipeline(
    dump.stdout,
    plain,
    codec.compressor({ level, threads: opts.compression?.threads }),
    cipher.encryptor(opts.recipients),
    stored,
  ).catch(note);
  const putDone = opts.storage
    .put(keys.dataKey, stored, { signal: abort.signal, ifNotExists: true })
    .catch(note);
  const dumpDone = dump.exited.catch(note);
  try {
    await Promise.all([putDone, chainDone, dumpDone]);
  } catch (e) {
    dump.kill();
    abort.abort(e);
    await Promise.allSettled([putDone, chainDone, dumpDone]);
    // A put may have won the race against a late error; make sure nothing that looks like data stays.
    await opts.storage.delete(keys.dataKey).catch(() => undefined);
    if (opts.signal?.aborted) {
      throw new DbcrateError(ErrorCodes.INTERRUPTED, 'backup interrupted; nothing was kept');
    }
    throw firstError ?? e;
  } finally {
    opts.signal?.removeEventListener('abort', onOuterAbort);
  }
  const finished = new Date();

  const manifest: DumpManifest = {
    format: MANIFEST_FORMAT,
    formatVersion: MANIFEST_VERSION,
    kind: 'logical',
    databaseId,
    snapshotId,
    dbcrateVersion: DBCRATE_VERSION,
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    server: {
      version: info.version,
      versionNum: info.versionNum,
      major: info.major,
      systemIdentifier: info.systemIdentifier,
      database: info.databaseName,
    },
    tool: { name: 'pg_dump', version: tools.version, format: 'custom' },
    object: {
      key: keys.dataKey,
      storedSize: stored.bytes,
      sha256: stored.sha256(),
      plaintextSize: plain.bytes,
    },
    compression: { codec: codec.name, implementation: codec.implementation, level },
    encryption: {
      cipher: cipher.name,
      recipients: opts.recipients.map((r) => ({
        fingerprint: r.fingerprint,
        encryptionKeyIds: r.encryptionKeyIds,
      })),
    },
  };
  await opts.storage.put(keys.manifestKey, Readable.from([serializeManifest(manifest)]), {
    ifNotExists: true,
  });
  progress?.done({ snapshotId, storedBytes: stored.bytes });
  log.info({ snapshotId, plaintextBytes: plain.bytes, storedBytes: stored.bytes }, 'backup finished');
  return { manifest, ...keys };
}
