import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import { getCodec, type ZstdImplementation } from '@dbcrate/compression';
import {
  getCipher,
  type DecryptionKey,
  type RecipientKey,
  type SigningKey,
  type TrustPolicy,
} from '@dbcrate/crypto';
import type { ObjectInfo, Storage } from '@dbcrate/storage';
import {
  CLUSTER_FORMAT_VERSION,
  ensureClusterIdentity,
  timelineKey,
  walKey,
  type ClusterIdentity,
  type ParsedWalKey,
} from './pitr.layout';
import { claimAndWrite, conflictError, walNameState, type ClaimHooks } from './wal.claim';
import { checkSegment, unreadable } from './wal.segment';
import {
  parseTimelineHistory,
  requireWalFileName,
  systemIdentifierFromControlFile,
  type TimelineHistoryEntry,
  type WalFileName,
} from './wal.names';

export interface WalSealOptions {
  recipients: RecipientKey[];
  level?: number;
  implementation?: ZstdImplementation;
  /** Sign inside the encrypted object (docs/signing.md); needs `databaseId` and the file's name. */
  signingKey?: SigningKey;
  databaseId?: string;
  /**
   * libzstd worker threads for this segment (default none): a segment alone on an otherwise
   * idle host is compressed on several cores at once, for the archive_command's latency.
   */
  zstdThreads?: number;
}

/** The signature notation that binds a WAL object to its database id and file name. */
export const WAL_BINDING_NOTATION = 'binding@dbcrate';

export function walBinding(databaseId: string, walFile: string): string {
  return `${databaseId}/${walFile}`;
}

/** At most one scratch per thread is kept (see sealWal); small files (history) need none. */
const scratch: Buffer[] = [];
const SCRATCH_MIN = 1 << 20;

/** zstd's worst case for `n` bytes (ZSTD_COMPRESSBOUND), so a scratch fits any segment of that size. */
function compressBound(n: number): number {
  return n + (n >> 8) + (n < 128 << 10 ? ((128 << 10) - n) >> 11 : 0);
}

/**
 * Plaintext WAL file → zstd → OpenPGP, in memory (a WAL file is at most a segment, 16 MiB
 * by default). With a signing key the message is signed inside its encryption (no extra
 * object, no extra request), the signature naming `<database id>/<WAL file name>`.
 */
export async function sealWal(
  plain: Uint8Array,
  opts: WalSealOptions,
  walFile?: string,
): Promise<Uint8Array> {
  if (opts.signingKey && (!walFile || !opts.databaseId)) {
    throw new DbcrateError(ErrorCodes.INTERNAL, 'a signed WAL object needs its database id and file name');
  }
  const codec = getCodec('zstd', { implementation: opts.implementation ?? 'auto' });
  // The compressed segment lives only until it is encrypted (into a buffer of its own):
  // it is written into a scratch buffer that the next segment reuses. A scratch is taken,
  // not shared, so calls that overlap (awaiting the key packets) each have their own.
  const bound = compressBound(plain.length);
  let into = plain.length >= SCRATCH_MIN ? scratch.pop() : undefined;
  if (plain.length >= SCRATCH_MIN && (!into || into.length < bound)) into = Buffer.allocUnsafe(bound);
  try {
    const compressed = await codec.compressBuffer(plain, {
      level: opts.level ?? 3,
      threads: opts.zstdThreads ?? 0,
      into,
    });
    if (!opts.signingKey) return await getCipher('openpgp').encryptBuffer(compressed, opts.recipients);
    return await getCipher('openpgp').encryptBuffer(compressed, opts.recipients, {
      signingKey: opts.signingKey,
      notations: { [WAL_BINDING_NOTATION]: walBinding(opts.databaseId!, walFile!) },
    });
  } finally {
    if (into && scratch.length === 0) scratch.push(into);
  }
}

export interface WalOpenCheck {
  trust: TrustPolicy;
  databaseId: string;
  walFile: string;
}

/**
 * The reverse of sealWal; the OpenPGP MDC and the zstd checksum are both checked, and with
 * `check` the signature inside: by a trusted signer, for this database id and file name.
 */
export async function openWal(
  stored: Uint8Array,
  keys: DecryptionKey[],
  check?: WalOpenCheck,
): Promise<Buffer> {
  const compressed = await getCipher('openpgp').decryptBuffer(
    stored,
    keys,
    check
      ? {
          verify: {
            trust: check.trust,
            notations: { [WAL_BINDING_NOTATION]: walBinding(check.databaseId, check.walFile) },
            what: `WAL file ${check.walFile}`,
          },
        }
      : {},
  );
  return getCodec('zstd').decompressBuffer(compressed);
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Every archived copy of one WAL file (normally zero or one); zero-byte objects never count. */
export async function findArchived(
  storage: Storage,
  databaseId: string,
  walFile: string,
): Promise<ParsedWalKey[]> {
  return (await walNameState(storage, databaseId, walFile)).objects;
}

export type PushOutcome = 'archived' | 'already-archived';

export interface PushResult {
  walFile: string;
  outcome: PushOutcome;
  key: string;
  plainBytes: number;
  storedBytes: number;
}

/** Read the cluster's system identifier from global/pg_control (no connection needed). */
export async function readSystemIdentifier(pgdata: string): Promise<string> {
  try {
    return systemIdentifierFromControlFile(await readFile(join(pgdata, 'global', 'pg_control')));
  } catch (e) {
    if (e instanceof DbcrateError) throw e;
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `cannot read ${join(pgdata, 'global', 'pg_control')}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      {
        hint: 'wal-push runs in the data directory (archive_command does that); elsewhere pass --pgdata DIR',
      },
    );
  }
}

export interface SealedSegment {
  sha256: string;
  sealed: Uint8Array;
  plainBytes: number;
  /** From the segment's header. */
  segmentSize: number;
}

export interface WalArchiverOptions {
  storage: Storage;
  databaseId: string;
  systemIdentifier: string;
  walSegmentSize?: number;
  /** `walFile` is the name the object is stored under: a signed object is bound to it. */
  seal: (plain: Buffer, walFile: string) => Promise<Uint8Array>;
  /**
   * Optional, for segments: read, check (as the archiver would), hash and seal in one step,
   * elsewhere (the agent runs it on a worker thread).
   */
  sealSegment?: (path: string, walFile: string) => Promise<SealedSegment>;
  /** Tests: barriers inside the race of two pushers (wal.claim.ts; PutOptions.beforeCommit). */
  hooks?: ClaimHooks & { beforeCommit?: (walFile: string) => Promise<void> };
}

/**
 * Pushes WAL files to one database id. Never overwrites: a file already archived with the
 * same content (sha256 in the object name) is success, with different content an error.
 * Resolves only once the object is durable (the storage put has completed).
 */
export class WalArchiver {
  private identity?: Promise<ClusterIdentity | undefined>;

  constructor(private readonly opts: WalArchiverOptions) {}

  get databaseId(): string {
    return this.opts.databaseId;
  }

  /** `segSize` only from a segment's header: a history file's length is not a segment size. */
  private ensureIdentity(segSize: number | undefined): Promise<ClusterIdentity | undefined> {
    if (this.identity) return this.identity;
    const p = ensureClusterIdentity(this.opts.storage, this.opts.databaseId, {
      systemIdentifier: this.opts.systemIdentifier,
      walSegmentSize: segSize,
    }).then(
      (id) => {
        if (!id) this.identity = undefined; // not created yet: the first segment will
        return id;
      },
      (e: unknown) => {
        this.identity = undefined;
        throw e;
      },
    );
    this.identity = p;
    return p;
  }

  async push(path: string, signal?: AbortSignal): Promise<PushResult> {
    const name = requireWalFileName(basename(path));
    // A segment (almost always new) is read, checked, hashed and sealed in one step where
    // the agent does it, on a worker thread; anything else here.
    const offload = this.opts.sealSegment && name.kind === 'segment' ? this.opts.sealSegment : undefined;
    let early: SealedSegment | undefined;
    let plain: Buffer | undefined;
    let segSize: number | undefined;
    if (offload) {
      early = await offload(path, name.name);
      segSize = early.segmentSize;
    } else {
      try {
        plain = await readFile(path);
      } catch (e) {
        throw unreadable(path, e);
      }
      segSize = this.checkContent(name, plain);
    }
    // A malformed history file is refused before anything is stored.
    const history = name.kind === 'history' ? checkHistory(name, plain!) : undefined;
    const layout = (await this.ensureIdentity(segSize))?.formatVersion ?? CLUSTER_FORMAT_VERSION;
    const plainBytes = early?.plainBytes ?? plain!.length;
    const sha = early?.sha256 ?? sha256Hex(plain!);
    const pre = await walNameState(this.opts.storage, this.opts.databaseId, name.name, layout);
    const other = pre.objects.find((o) => o.sha256 !== sha) ?? pre.claims.find((c) => c.sha256 !== sha);
    if (other)
      throw conflictError(this.opts.storage, this.opts.databaseId, name.name, sha, other, !('size' in other));
    const same = pre.objects.find((o) => o.sha256 === sha);
    if (same) {
      // A retry after the timeline record failed to be written must still write it.
      if (history) await this.recordTimeline(name, history);
      return { walFile: name.name, outcome: 'already-archived', key: same.key, plainBytes, storedBytes: 0 };
    }
    const key = walKey(this.opts.databaseId, name.name, sha, layout);
    // A zero-byte object under our name is not an archived copy: replace it.
    if (pre.empty.some((e) => e.key === key)) await this.opts.storage.delete(key);

    const sealed = early?.sealed ?? (await this.opts.seal(plain!, name.name));
    let stored = true;
    await claimAndWrite(
      this.opts.storage,
      this.opts.databaseId,
      name.name,
      sha,
      async () => {
        try {
          await this.opts.storage.put(
            key,
            Readable.from([Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength)]),
            { ifNotExists: true, signal, beforeCommit: this.beforeCommit(name.name) },
          );
        } catch (e) {
          // A pusher of the same content (an agent pushing ahead, a retry) stored it meanwhile.
          if ((e as { code?: string }).code !== ErrorCodes.STORAGE_CONFLICT) throw e;
          // Only if what took the name is a real copy: a zero-byte object is not archived WAL.
          const now = await walNameState(this.opts.storage, this.opts.databaseId, name.name, layout);
          if (!now.objects.some((o) => o.key === key)) {
            throw new DbcrateError(
              ErrorCodes.INTEGRITY,
              `${name.name}: ${key} appeared in ${this.opts.storage.displayUrl} while it was being archived, and it is empty; nothing was acknowledged`,
              { hint: 'PostgreSQL retries; the retry replaces the empty object' },
            );
          }
          stored = false;
        }
      },
      { ...this.opts.hooks, layout },
    );
    if (history) await this.recordTimeline(name, history);
    logger().debug({ walFile: name.name, key, plainBytes, storedBytes: sealed.byteLength }, 'WAL archived');
    return {
      walFile: name.name,
      outcome: stored ? 'archived' : 'already-archived',
      key,
      plainBytes,
      storedBytes: stored ? sealed.byteLength : 0,
    };
  }

  private beforeCommit(walFile: string): (() => Promise<void>) | undefined {
    const hook = this.opts.hooks?.beforeCommit;
    return hook ? () => hook(walFile) : undefined;
  }

  /** Size, page header, system identifier: refuse what is not this cluster's WAL. */
  private checkContent(name: WalFileName, plain: Buffer): number | undefined {
    if (name.kind !== 'segment' && name.kind !== 'partial') return this.opts.walSegmentSize;
    return checkSegment(name, plain, this.opts.systemIdentifier);
  }

  /** Timeline ancestry in plaintext, so `windows` needs no private key. */
  private async recordTimeline(name: WalFileName, entries: TimelineHistoryEntry[]): Promise<void> {
    const body =
      JSON.stringify({
        format: 'dbcrate.timeline',
        formatVersion: 1,
        timeline: name.timeline,
        history: entries,
      }) + '\n';
    try {
      await this.opts.storage.put(timelineKey(this.opts.databaseId, name.timeline), Readable.from([body]), {
        ifNotExists: true,
      });
    } catch (e) {
      if ((e as { code?: string }).code !== ErrorCodes.STORAGE_CONFLICT) throw e;
    }
  }
}

/** An empty or malformed .history file is refused before anything is stored. */
function checkHistory(name: WalFileName, plain: Buffer): TimelineHistoryEntry[] {
  const entries = parseTimelineHistory(plain.toString('utf8'));
  const ascending = entries.every(
    (e, i) => e.timeline < name.timeline && (i === 0 || entries[i - 1].timeline < e.timeline),
  );
  if (entries.length === 0 || !ascending) {
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      `${name.name} is not a valid timeline history: ${entries.length === 0 ? 'it lists no parent timeline' : 'its parent timelines are not ascending and below ' + name.timeline}`,
      { hint: 'PostgreSQL writes one line per parent timeline; nothing was archived' },
    );
  }
  return entries;
}

export type { ObjectInfo };
