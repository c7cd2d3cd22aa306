import { DbcrateError, ErrorCodes, MeterStream, logger } from '@dbcrate/core';
import { getCodec, type ZstdImplementation } from '@dbcrate/compression';
import { getCipher, signDetached, type RecipientKey, type SigningKey } from '@dbcrate/crypto';
import type { Storage } from '@dbcrate/storage';
import { connect, findClientTools, serverInfo, toLibpqEnv } from '@dbcrate/postgres';
import type { Client } from 'pg';
import { runTool } from '@dbcrate/plumbing';
import { storeToolOutput } from '@dbcrate/plumbing';
import { sealStage } from '@dbcrate/plumbing';
import { defaultDatabaseId, dumpKeys } from './layout';
import { signatureKey, snapshotIdFor, validateDatabaseId } from '@dbcrate/plumbing';
import { describeEncoding } from '@dbcrate/plumbing';
import { serializeManifest, MANIFEST_FORMAT, MANIFEST_VERSION, type DumpManifest } from './manifest';
import type { ProgressSink } from '@dbcrate/plumbing';
import { DBCRATE_VERSION } from '@dbcrate/plumbing';
import { Readable } from 'node:stream';

export interface BackupOptions {
  dbUrl: string;
  storage: Storage;
  recipients: RecipientKey[];
  /** The host's signing key: the manifest gets a detached signature `<manifest>.sig` (docs/signing.md). */
  signingKey?: SigningKey;
  databaseId?: string;
  compression?: { level?: number; threads?: number; implementation?: ZstdImplementation };
  pgBinDir?: string;
  signal?: AbortSignal;
  progress?: (phase: string, total?: number) => ProgressSink;
  now?: () => Date;
  /**
   * Compress and encrypt on a worker thread of this run. Off by default: on two cores it
   * cost more CPU and memory than libzstd's own threads plus AES on the event loop (see
   * "Tried and not kept" in docs/benchmarks.md); kept for machines where the event loop is
   * the bottleneck.
   */
  sealWorker?: boolean;
}

export interface BackupResult {
  manifest: DumpManifest;
  dataKey: string;
  manifestKey: string;
  /** Where the manifest's signature is, when signed. */
  signatureKey?: string;
}

interface ServerStartPoint {
  /** The server's clock, ISO-8601 UTC with microseconds. */
  time: string;
  lsn?: string;
  inRecovery: boolean;
}

/**
 * Where the server is when the dump starts, by its own clock and WAL position: this, not
 * the client's clock, orders snapshots for "latest" (a skewed client cannot reorder them).
 */
async function serverStartPoint(client: Client): Promise<ServerStartPoint> {
  const { rows } = await client.query<{ time: string; lsn: string | null; in_recovery: boolean }>(
    `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS time,
            (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text AS lsn,
            pg_is_in_recovery() AS in_recovery`,
  );
  const r = rows[0];
  return { time: r.time, lsn: r.lsn ?? undefined, inRecovery: r.in_recovery };
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
  const implementation = opts.compression?.implementation ?? 'auto';
  const codec = getCodec('zstd', { implementation });
  const cipher = getCipher('openpgp');

  const client = await connect(opts.dbUrl);
  let info;
  let tools;
  let at: ServerStartPoint;
  try {
    info = await serverInfo(client);
    tools = await findClientTools(info.major, { binDir: opts.pgBinDir });
    at = await serverStartPoint(client);
  } finally {
    await client.end().catch(() => undefined);
  }
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
    env,
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
      // libzstd compresses on its own threads (the event loop only waits when their job
      // queue is full); AES and SHA-1 run on the event loop. Or both on a worker (sealWorker).
      ...(opts.sealWorker
        ? [
            sealStage({
              codec: { name: codec.name, implementation, level, threads: opts.compression?.threads },
              cipher: { name: cipher.name, recipients: opts.recipients },
            }),
          ]
        : [
            codec.compressor({ level, threads: opts.compression?.threads }),
            cipher.encryptor(opts.recipients),
          ]),
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
    databaseIdFrom: opts.databaseId ? 'option' : 'name',
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
      startTime: at.time,
      ...(at.lsn ? { startLsn: at.lsn } : {}),
      inRecovery: at.inRecovery,
    },
    tool: { name: 'pg_dump', version: tools.version, format: 'custom' },
    object: {
      key: keys.dataKey,
      storedSize: stored.bytes,
      sha256: stored.sha256(),
      plaintextSize: plain.bytes,
    },
    ...describeEncoding(codec, level, cipher, opts.recipients),
    ...(opts.signingKey ? { signer: opts.signingKey.fingerprint } : {}),
  };
  const body = serializeManifest(manifest);
  const sigKey = opts.signingKey ? signatureKey(keys.manifestKey) : undefined;
  let sigWritten = false;
  try {
    // The signature goes first: the manifest, written last, is still what makes a backup.
    if (opts.signingKey && sigKey) {
      const sig = await signDetached(body, opts.signingKey);
      await opts.storage.put(sigKey, Readable.from([Buffer.from(sig)]), { ifNotExists: true });
      sigWritten = true;
    }
    await opts.storage.put(keys.manifestKey, Readable.from([body]), {
      ifNotExists: true,
    });
  } catch (e) {
    // Without its manifest the data is no backup: remove what this run wrote (the data key
    // is this run's own, storeToolOutput created it with ifNotExists). A put can fail after it
    // committed (the answer was lost): remove the manifest first, unless the name was another
    // writer's (a conflict), so no manifest is left pointing at deleted data.
    if ((e as { code?: string }).code !== ErrorCodes.STORAGE_CONFLICT) {
      await opts.storage.delete(keys.manifestKey).catch(() => undefined);
    }
    await opts.storage.delete(keys.dataKey).catch(() => undefined);
    if (sigWritten && sigKey) await opts.storage.delete(sigKey).catch(() => undefined);
    throw e;
  }
  progress?.done({ snapshotId, storedBytes: stored.bytes });
  log.info({ snapshotId, plaintextBytes: plain.bytes, storedBytes: stored.bytes }, 'backup finished');
  return { manifest, ...keys, ...(sigKey ? { signatureKey: sigKey } : {}) };
}
