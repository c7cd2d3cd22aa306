import { DbcrateError, ErrorCodes, MeterStream, logger } from '@dbcrate/core';
import { getCodec, type ZstdImplementation } from '@dbcrate/compression';
import { getCipher, type RecipientKey } from '@dbcrate/crypto';
import type { Storage } from '@dbcrate/storage';
import { childEnv, connect, findClientTools, serverInfo, toLibpqEnv } from '@dbcrate/postgres';
import { runTool } from './child-process.stream';
import { storeToolOutput } from './store-tool-output';
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
  const stored = await storeToolOutput({
    tool: dump,
    stages: [
      plain,
      codec.compressor({ level, threads: opts.compression?.threads }),
      cipher.encryptor(opts.recipients),
    ],
    storage: opts.storage,
    key: keys.dataKey,
    signal: opts.signal,
    what: 'backup',
  });
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
