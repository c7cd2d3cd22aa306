import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { Storage } from '@dbcrate/storage';
import { parseWalKey, walLookupPrefix, type ParsedWalKey, type WalLayout } from './pitr.layout';

/**
 * At most one content per WAL name, on any backend (docs/format.md, "One content per WAL
 * name"). Objects are named by content (`<name>-<sha256>.zst.pgp`), so a conditional write
 * of one key cannot stop a second content under another key, and s3rver (like some S3
 * providers) ignores If-None-Match anyway. So a push first leaves a *claim*
 * `<name>-<sha256>.claim-<random>` next to where its object will go, lists the name, and
 * goes on only when no claim or object of other content is there; it writes its object,
 * then removes the claims of its content. Objects are only ever written by a pusher that
 * won this way and never deleted, and from a winner's claim until its object exists one of
 * the two is always present, so of two contents racing at most one wins (both may lose:
 * PostgreSQL retries). A loser removes its claim and leaves nothing.
 */

export interface WalCandidate extends ParsedWalKey {
  size: number;
}

export interface WalClaim {
  key: string;
  sha256: string;
}

const CLAIM = /^(.+)-([0-9a-f]{64})\.claim-([0-9a-f]{16})$/;

export function walClaimKey(
  databaseId: string,
  walFile: string,
  sha256: string,
  layout: WalLayout = 2,
): string {
  return `${walLookupPrefix(databaseId, walFile, layout)}${sha256}.claim-${randomBytes(8).toString('hex')}`;
}

export function parseWalClaim(key: string, walFile: string): WalClaim | undefined {
  const m = CLAIM.exec(key.slice(key.lastIndexOf('/') + 1));
  return m && m[1] === walFile ? { key, sha256: m[2] } : undefined;
}

export interface WalNameState {
  /** Archived objects of this name with content (a zero-byte object never counts). */
  objects: WalCandidate[];
  /** Zero-byte objects: left by a broken writer or tool; never "already archived". */
  empty: WalCandidate[];
  claims: WalClaim[];
}

/**
 * Everything stored under one WAL name: one listing of its prefix in `layout`; without a
 * layout (a reader that does not know the archive's), both: partitioned, then flat.
 */
export async function walNameState(
  storage: Storage,
  databaseId: string,
  walFile: string,
  layout?: WalLayout,
): Promise<WalNameState> {
  const state: WalNameState = { objects: [], empty: [], claims: [] };
  for (const l of layout ? [layout] : ([2, 1] as const)) {
    for await (const o of storage.list(walLookupPrefix(databaseId, walFile, l))) {
      const p = parseWalKey(o.key);
      if (p && p.name === walFile) (o.size > 0 ? state.objects : state.empty).push({ ...p, size: o.size });
      else {
        const c = parseWalClaim(o.key, walFile);
        if (c) state.claims.push(c);
      }
    }
  }
  return state;
}

export function conflictError(
  storage: Storage,
  databaseId: string,
  walFile: string,
  sha: string,
  other: { key: string; sha256: string },
  claim: boolean,
): DbcrateError {
  return new DbcrateError(
    ErrorCodes.WAL_CONFLICT,
    `${walFile} is ${claim ? 'being archived (or was, by an interrupted push)' : 'already archived'} in ${storage.displayUrl} ` +
      `with different content (archived sha256 ${other.sha256.slice(0, 16)}…, this file ${sha.slice(0, 16)}…); refusing to overwrite it`,
    {
      hint:
        `two servers are archiving to database id "${databaseId}" (a restored copy that kept archive_command?). ` +
        'PostgreSQL keeps the file and retries; stop archiving from the server that should not, or give it its own --database-id' +
        (claim
          ? `. If no other server archives there, delete ${other.key} (left by an interrupted push)`
          : ''),
    },
  );
}

export interface ClaimOptions extends ClaimHooks {
  /** Where the archive keeps WAL (cluster.json formatVersion); default 2. */
  layout?: WalLayout;
}

export interface ClaimHooks {
  /** Tests: after the first listing found the name free, before the claim is written. */
  afterPrecheck?: () => Promise<void>;
  /** Tests: after the claim is written, before the name is listed again. */
  beforeClaimCheck?: () => Promise<void>;
  /** Tests: after the name was listed again, before the outcome (a loser's cleanup) acts on it. */
  afterClaimCheck?: () => Promise<void>;
}

/** Run `write` (which stores the object) only if this content wins the name; else E_WAL_CONFLICT. */
export async function claimAndWrite(
  storage: Storage,
  databaseId: string,
  walFile: string,
  sha: string,
  write: () => Promise<void>,
  hooks: ClaimOptions = {},
): Promise<void> {
  const layout = hooks.layout ?? 2;
  await hooks.afterPrecheck?.();
  const claimKey = walClaimKey(databaseId, walFile, sha, layout);
  const body = JSON.stringify({
    sha256: sha,
    host: hostname(),
    pid: process.pid,
    at: new Date().toISOString(),
  });
  await storage.put(claimKey, Readable.from([body + '\n']), { ifNotExists: true });
  try {
    await hooks.beforeClaimCheck?.();
    // Two listings: a directory read (file, SFTP) is no snapshot, and a winner's object may
    // appear behind the cursor while its claim goes ahead of it; the second listing, begun
    // after the first ended, then sees the object.
    const first = await walNameState(storage, databaseId, walFile, layout);
    const second = await walNameState(storage, databaseId, walFile, layout);
    const state: WalNameState = {
      objects: [...first.objects, ...second.objects],
      empty: [],
      claims: [...first.claims, ...second.claims],
    };
    await hooks.afterClaimCheck?.();
    const other = state.objects.find((o) => o.sha256 !== sha) ?? state.claims.find((c) => c.sha256 !== sha);
    if (other) throw conflictError(storage, databaseId, walFile, sha, other, !('size' in other));
    await write();
    // Our object stands for our content now: drop every claim of it (ours, a crashed twin's).
    const twins = new Set(
      state.claims.filter((c) => c.sha256 === sha && c.key !== claimKey).map((c) => c.key),
    );
    for (const k of twins) await storage.delete(k).catch(() => undefined);
  } finally {
    // After the write (our object now stands for our content), or as a loser: leave nothing.
    await storage.delete(claimKey).catch(() => undefined);
  }
}
