import type { Client } from 'pg';
import { DbcrateError, ErrorCodes, MeterStream, logger } from '@dbcrate/core';
import { getCodec, type ZstdImplementation } from '@dbcrate/compression';
import { getCipher, type RecipientKey, type SigningKey } from '@dbcrate/crypto';
import {
  DBCRATE_VERSION,
  runTool,
  snapshotIdFor,
  storeToolOutput,
  validateDatabaseId,
  type ProgressSink,
  describeEncoding,
} from '@dbcrate/plumbing';
import { connect, findClientTools, serverInfo, toLibpqEnv, type ServerInfo } from '@dbcrate/postgres';
import type { Storage } from '@dbcrate/storage';
import { BASE_MANIFEST_FORMAT, type BaseManifest, type BaseManifestV1 } from './base.manifest';
import { commitBaseManifest } from './base.commit';
import { baseBackupKeys, ensureClusterIdentity } from './pitr.layout';
import { backupWalRange, TarScanner, type BackupWalRange } from './tar.scanner';
import { parseLsn, segmentOfLsn, walFileName } from './wal.names';

export interface BaseBackupOptions {
  dbUrl: string;
  storage: Storage;
  recipients: RecipientKey[];
  /** The host's signing key: the manifest gets a detached signature `backup.manifest.json.sig`. */
  signingKey?: SigningKey;
  /** Name of the cluster in the destination; default: its system identifier. */
  databaseId?: string;
  compression?: { level?: number; threads?: number; implementation?: ZstdImplementation };
  pgBinDir?: string;
  signal?: AbortSignal;
  progress?: (phase: string, total?: number) => ProgressSink;
  now?: () => Date;
}

export interface BaseBackupResult<M extends BaseManifest = BaseManifest> {
  manifest: M;
  /** The (first) data object. */
  dataKey: string;
  /** Every data object (pgdata: one per part). */
  dataKeys?: string[];
  manifestKey: string;
  signatureKey?: string;
}

/** The tablespaces every cluster has, both inside the data directory. */
export const DEFAULT_TABLESPACES: readonly string[] = ['pg_default', 'pg_global'];

export interface TablespaceInfo {
  oid: number;
  name: string;
  /** pg_tablespace_location(): '' for the built-in ones. */
  location: string;
}

/** What the server must look like for a usable physical backup, read before anything is written. */
export interface PhysicalServerInfo extends ServerInfo {
  systemIdentifier: string;
  walSegmentSize: number;
  tablespaces: TablespaceInfo[];
  archiveMode: string;
  /** undefined: not readable by this user (archive_command is superuser-only). */
  archiveCommand?: string;
  archiveLibrary?: string;
}

const SIZE_UNITS: Readonly<Record<string, number>> = {
  B: 1,
  kB: 1024,
  MB: 1024 ** 2,
  GB: 1024 ** 3,
  TB: 1024 ** 4,
};

/** `SHOW wal_segment_size` ("16MB", "1GB", "16777216") → bytes. */
export function parseWalSegmentSize(shown: string): number {
  const m = /^\s*(\d+)\s*(B|kB|MB|GB|TB)?\s*$/.exec(shown);
  const bytes = m ? Number(m[1]) * SIZE_UNITS[m[2] ?? 'B'] : NaN;
  // PostgreSQL allows powers of two from 1 MB to 1 GB.
  if (
    !Number.isSafeInteger(bytes) ||
    bytes < 1024 * 1024 ||
    bytes > 1024 ** 3 ||
    (bytes & (bytes - 1)) !== 0
  ) {
    throw new DbcrateError(ErrorCodes.INTERNAL, `unexpected wal_segment_size "${shown}"`);
  }
  return bytes;
}

/**
 * The first and last WAL file a backup depends on: the segment holding the start point,
 * and the one holding the last byte before the stop point (on the stop timeline).
 */
export function backupWalFiles(
  range: { timeline: number; stopTimeline?: number; startLsn: bigint; stopLsn: bigint },
  segSize: number,
): { startWalFile: string; stopWalFile: string } {
  const last = range.stopLsn > range.startLsn ? range.stopLsn - 1n : range.startLsn;
  return {
    startWalFile: walFileName(range.timeline, segmentOfLsn(range.startLsn, segSize), segSize),
    stopWalFile: walFileName(range.stopTimeline ?? range.timeline, segmentOfLsn(last, segSize), segSize),
  };
}

export async function physicalServerInfo(client: Client): Promise<PhysicalServerInfo> {
  const info = await serverInfo(client);
  if (!info.systemIdentifier) {
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      'cannot read the cluster system identifier: this user may not run pg_control_system()',
      {
        hint:
          'a physical backup is tied to its cluster by the system identifier; connect as a superuser, or ' +
          'GRANT EXECUTE ON FUNCTION pg_control_system() TO the backup user',
      },
    );
  }
  // pg_settings hides rows this user may not read (archive_command is superuser-only).
  const { rows: settings } = await client.query<{ name: string; setting: string }>(
    `SELECT name, setting FROM pg_settings
      WHERE name IN ('archive_mode', 'archive_command', 'archive_library', 'wal_level')`,
  );
  const setting = (n: string) => settings.find((r) => r.name === n)?.setting;
  const { rows: seg } = await client.query<{ wal_segment_size: string }>('SHOW wal_segment_size');
  const { rows: tablespaces } = await client.query<{ oid: number; name: string; location: string }>(
    `SELECT oid::int AS oid, spcname AS name, coalesce(pg_tablespace_location(oid), '') AS location
       FROM pg_tablespace ORDER BY oid`,
  );
  return {
    ...info,
    systemIdentifier: info.systemIdentifier,
    walSegmentSize: parseWalSegmentSize(seg[0].wal_segment_size),
    tablespaces,
    archiveMode: setting('archive_mode') ?? 'off',
    archiveCommand: setting('archive_command'),
    archiveLibrary: setting('archive_library'),
  };
}

/** Refuse servers whose physical backup would be incomplete or useless; see docs/pitr.md. */
export function checkBackupable(info: PhysicalServerInfo): void {
  const log = logger();
  if (info.versionNum < 130000) {
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `PostgreSQL ${info.version} is too old for dbcrate basebackup: it needs PostgreSQL 13 or newer (backup manifests)`,
      { hint: 'upgrade the server, or back up its databases with `dbcrate backup`' },
    );
  }
  const extra = info.tablespaces.filter((t) => !DEFAULT_TABLESPACES.includes(t.name));
  if (extra.length > 0) {
    const list = extra.map((t) => `${t.name} (${t.location || 'no location'})`).join(', ');
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `the cluster has tablespaces outside the data directory, which dbcrate basebackup does not back up yet: ${list}`,
      {
        hint:
          'a base backup without them could not be restored; move their objects to pg_default ' +
          '(ALTER TABLE … SET TABLESPACE pg_default, ALTER DATABASE … SET TABLESPACE pg_default) and DROP TABLESPACE, ' +
          'or back up the databases with `dbcrate backup`',
      },
    );
  }
  const archiveHint =
    "set archive_mode = on and archive_command = 'dbcrate wal-push %p --config /etc/dbcrate/wal.yaml' " +
    '(restart PostgreSQL for archive_mode), so every WAL file reaches the destination';
  if (info.archiveMode === 'off') {
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      'archive_mode is off: a base backup is useless without the WAL written during and after it',
      { hint: archiveHint },
    );
  }
  if (info.inRecovery && info.archiveMode !== 'always') {
    log.warn(
      { archiveMode: info.archiveMode },
      'backing up a standby: its WAL must be archived by the primary into the same destination and database id',
    );
  } else if (info.archiveCommand !== undefined && !info.archiveCommand && !info.archiveLibrary) {
    // pg_basebackup -X none waits for the last segment to be archived: it would wait forever.
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `archive_mode is ${info.archiveMode} but archive_command is empty: no WAL is being archived`,
      { hint: archiveHint },
    );
  }
}

/** pg_basebackup's usual refusals, with what to do about them. */
function withHint(e: unknown, stderr: string): unknown {
  if (!(e instanceof DbcrateError) || e.code !== ErrorCodes.DB_TOOL_FAILED) return e;
  let hint: string | undefined;
  if (/no pg_hba\.conf entry for replication connection/i.test(stderr)) {
    hint =
      'pg_basebackup uses a replication connection: add a "host replication USER ADDRESS scram-sha-256" line to pg_hba.conf and reload';
  } else if (/must be superuser or replication role|permission denied to start WAL sender/i.test(stderr)) {
    hint = 'the backup user needs the REPLICATION attribute: ALTER ROLE … REPLICATION';
  } else if (/number of requested standby connections exceeds|max_wal_senders/i.test(stderr)) {
    hint = 'pg_basebackup needs a free WAL sender: raise max_wal_senders (restart) or retry later';
  } else if (/password authentication failed|no password supplied/i.test(stderr)) {
    hint = 'check the password in the connection URL (or PGPASSWORD / ~/.pgpass)';
  }
  return hint ? new DbcrateError(e.code, e.message, { hint, cause: e }) : e;
}

/**
 * pg_basebackup (tar to stdout, no WAL) → zstd → OpenPGP → storage, then the manifest.
 * The WAL the backup needs comes from the archive (`dbcrate wal-push`), so archiving must
 * be on. The data object only completes once pg_basebackup has exited 0, which happens
 * after the server has archived the backup's last WAL segment.
 */
export async function runBaseBackup(opts: BaseBackupOptions): Promise<BaseBackupResult<BaseManifestV1>> {
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
  let info: PhysicalServerInfo;
  try {
    info = await physicalServerInfo(client);
  } finally {
    await client.end().catch(() => undefined);
  }
  checkBackupable(info);
  const tools = await findClientTools(info.major, { binDir: opts.pgBinDir });
  if (tools.note) log.warn(tools.note);
  const databaseId = validateDatabaseId(opts.databaseId ?? info.systemIdentifier);
  await ensureClusterIdentity(opts.storage, databaseId, {
    systemIdentifier: info.systemIdentifier,
    walSegmentSize: info.walSegmentSize,
  });

  const started = (opts.now ?? (() => new Date()))();
  const backupId = snapshotIdFor(started);
  const keys = baseBackupKeys(databaseId, backupId);
  const ownDirs = [keys.dataKey.slice(0, keys.dataKey.lastIndexOf('/')), `${databaseId}/base`];
  log.info({ databaseId, backupId, key: keys.dataKey, server: info.version }, 'base backup started');

  // No -d: the target comes entirely from the libpq environment (password in PGPASSWORD only).
  // C messages, so that the -v lines below can be parsed whatever the locale.
  const { env } = toLibpqEnv(opts.dbUrl);
  const dump = runTool(
    tools.pgBasebackup,
    [
      '--pgdata=-',
      '--format=tar',
      '--wal-method=none',
      '--checkpoint=fast',
      '--no-password',
      '--verbose',
      `--label=dbcrate ${backupId}`,
    ],
    { ...env, LC_MESSAGES: 'C' },
    { label: 'pg_basebackup', unsetEnv: ['LC_ALL'] },
  );
  let partial = '';
  dump.child.stderr!.on('data', (d: string | Buffer) => {
    const lines = (partial + d.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) log.debug({ line }, 'pg_basebackup');
  });
  dump.child.stderr!.on('end', () => {
    if (partial.trim()) log.debug({ line: partial }, 'pg_basebackup');
  });
  // pg_basebackup -X none prints no LSNs; the backup's own backup_label and backup_manifest
  // (which pg_basebackup appends to a tar written to stdout) say where its WAL starts and stops.
  const scanner = new TarScanner({
    backup_label: { maxBytes: 64 * 1024 },
    backup_manifest: { maxBytes: 1024 * 1024, keep: 'tail' },
  });

  const progress = opts.progress?.('basebackup');
  const plain = new MeterStream((n) => progress?.update(n), { hash: false });
  const wal: { range?: BackupWalRange } = {};
  const stored = await storeToolOutput({
    tool: dump,
    stages: [
      scanner,
      plain,
      codec.compressor({ level, threads: opts.compression?.threads }),
      cipher.encryptor(opts.recipients),
    ],
    storage: opts.storage,
    key: keys.dataKey,
    signal: opts.signal,
    what: 'base backup',
    // The backup's folder is its own (random backup id): an interrupted one leaves no empty folder.
    removeEmptyDirs: ownDirs,
    verify: () => {
      if (!scanner.ok) {
        throw new DbcrateError(
          ErrorCodes.DB_TOOL_FAILED,
          'pg_basebackup wrote something that is not a tar archive',
        );
      }
      wal.range = backupWalRange(
        scanner.captured.get('backup_label')?.toString('utf8'),
        scanner.captured.get('backup_manifest')?.toString('utf8'),
      );
    },
    describe: (e) => withHint(e, dump.stderrTail()),
  });
  const range = wal.range;
  if (!range) throw new DbcrateError(ErrorCodes.INTERNAL, 'the base backup was stored without its WAL range');
  const finished = new Date();

  const manifest: BaseManifestV1 = {
    format: BASE_MANIFEST_FORMAT,
    formatVersion: 1,
    kind: 'physical',
    databaseId,
    backupId,
    dbcrateVersion: DBCRATE_VERSION,
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    startLsn: range.startLsn,
    stopLsn: range.stopLsn,
    timeline: range.timeline,
    ...backupWalFiles(
      { ...range, startLsn: parseLsn(range.startLsn), stopLsn: parseLsn(range.stopLsn) },
      info.walSegmentSize,
    ),
    server: {
      version: info.version,
      versionNum: info.versionNum,
      major: info.major,
      systemIdentifier: info.systemIdentifier,
    },
    walSegmentSize: info.walSegmentSize,
    tool: { name: 'pg_basebackup', version: tools.version },
    object: {
      key: keys.dataKey,
      storedSize: stored.bytes,
      sha256: stored.sha256(),
      plaintextSize: plain.bytes,
    },
    ...describeEncoding(codec, level, cipher, opts.recipients),
    tablespaces: info.tablespaces.map((t) => ({ oid: t.oid, name: t.name, location: t.location })),
    ...(opts.signingKey ? { signer: opts.signingKey.fingerprint } : {}),
  };
  const sigKey = await commitBaseManifest({
    storage: opts.storage,
    manifest,
    manifestKey: keys.manifestKey,
    dataKeys: [keys.dataKey],
    ownDirs,
    signingKey: opts.signingKey,
  });
  progress?.done({ backupId, storedBytes: stored.bytes });
  log.info(
    {
      backupId,
      startLsn: manifest.startLsn,
      stopLsn: manifest.stopLsn,
      timeline: range.timeline,
      plaintextBytes: plain.bytes,
      storedBytes: stored.bytes,
    },
    'base backup finished',
  );
  return { manifest, ...keys, ...(sigKey ? { signatureKey: sigKey } : {}) };
}
