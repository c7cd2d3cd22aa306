import { createHash } from 'node:crypto';
import { lstat, open, readdir, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { BaseFileEntry } from './base.manifest';
import { checksumOf, fileChecksum, type ManifestChecksumAlgorithm } from './pgdata.checksum';
import { contentPadding, tarHeader, type TarMember } from './pgdata.tar';

/**
 * What a base backup read from the data directory holds, after PostgreSQL's own rules for
 * base backups (docs: "Making a Base Backup Using the Low Level API"): runtime state that
 * the server recreates or discards at start is left out.
 */
/** Top-level directories kept, but empty. */
const EMPTIED_DIRS = new Set([
  'pg_dynshmem',
  'pg_notify',
  'pg_replslot',
  'pg_serial',
  'pg_snapshots',
  'pg_stat_tmp',
  'pg_subtrans',
]);
/** Top-level files left out (a backup_label left over from an old backup would mislead recovery). */
const SKIPPED_TOP_FILES = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'backup_label',
  'backup_label.old',
  'tablespace_map',
  'tablespace_map.old',
  'backup_manifest',
  'postgresql.auto.conf.tmp',
]);
const RELATION_FILE = /^(\d+)(_(?:fsm|vm|init))?(\.\d+)?$/;

export interface DataEntry extends TarMember {
  /** Absolute path on disk (files). */
  abs?: string;
}

/** The system identifier recorded in `global/pg_control` (its first 8 bytes, little-endian). */
export async function readControlSystemIdentifier(dataDir: string): Promise<string> {
  const fh = await open(path.join(dataDir, 'global', 'pg_control'), 'r');
  try {
    const buf = Buffer.alloc(8);
    const { bytesRead } = await fh.read(buf, 0, 8, 0);
    if (bytesRead !== 8) throw new Error('pg_control is shorter than 8 bytes');
    return buf.readBigUInt64LE(0).toString();
  } finally {
    await fh.close();
  }
}

/** PG_VERSION of a data directory, or undefined when it has none. */
export async function readPgVersion(dataDir: string): Promise<string | undefined> {
  return (await readFile(path.join(dataDir, 'PG_VERSION'), 'utf8').catch(() => undefined))?.trim();
}

function member(rel: string, st: Awaited<ReturnType<typeof lstat>>, type: 'file' | 'dir'): DataEntry {
  return {
    path: rel,
    type,
    size: type === 'file' ? Number(st.size) : 0,
    mode: Number(st.mode) & 0o7777,
    uid: Number(st.uid),
    gid: Number(st.gid),
    mtime: Math.floor(Number(st.mtimeMs) / 1000),
  };
}

function missing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** Names of relation files of unlogged relations (those with an _init fork) other than the init fork. */
function unloggedForks(names: string[]): Set<string> {
  const unlogged = new Set<string>();
  for (const n of names) {
    const m = RELATION_FILE.exec(n);
    if (m && m[2] === '_init' && !m[3]) unlogged.add(m[1]);
  }
  const skip = new Set<string>();
  if (unlogged.size === 0) return skip;
  for (const n of names) {
    const m = RELATION_FILE.exec(n);
    if (m && unlogged.has(m[1]) && m[2] !== '_init') skip.add(n);
  }
  return skip;
}

/**
 * Directories and regular files of the data directory, parents before children. Files that
 * vanish while it is walked are left out (WAL replay recreates or drops them). A symlink is
 * refused, except pg_wal (kept as a directory): user tablespaces are refused before this.
 */
export async function listDataDirectory(root: string): Promise<DataEntry[]> {
  const out: DataEntry[] = [];
  const walk = async (rel: string): Promise<void> => {
    let names: string[];
    try {
      names = (await readdir(path.join(root, rel))).sort();
    } catch (e) {
      if (missing(e)) return;
      throw e;
    }
    const top = rel === '';
    const inRelDir = /^(base\/\d+|global)$/.test(rel);
    const skipForks = inRelDir ? unloggedForks(names) : new Set<string>();
    for (const name of names) {
      const childRel = top ? name : `${rel}/${name}`;
      if (name === 'pg_internal.init' || name.startsWith('pgsql_tmp') || skipForks.has(name)) continue;
      if (top && SKIPPED_TOP_FILES.has(name)) continue;
      let st;
      try {
        st = await lstat(path.join(root, childRel));
      } catch (e) {
        if (missing(e)) continue;
        throw e;
      }
      if (top && name === 'pg_wal' && (st.isDirectory() || st.isSymbolicLink())) {
        // The WAL comes from the archive: an empty pg_wal and its archive_status, as a directory
        // even where pg_wal is a symlink elsewhere.
        const dirMode = { ...st, mode: 0o40700 } as typeof st;
        out.push(member('pg_wal', st.isDirectory() ? st : dirMode, 'dir'));
        out.push(member('pg_wal/archive_status', st.isDirectory() ? st : dirMode, 'dir'));
        continue;
      }
      if (st.isSymbolicLink()) {
        throw new DbcrateError(
          ErrorCodes.CONFIG,
          `the data directory holds a symlink, ${childRel}, which the pgdata method does not back up`,
          {
            hint: 'use --method pg_basebackup, or replace the symlink by the file or directory it points to',
          },
        );
      }
      if (st.isDirectory()) {
        out.push(member(childRel, st, 'dir'));
        if (top && EMPTIED_DIRS.has(name)) continue;
        await walk(childRel);
      } else if (st.isFile()) {
        out.push({ ...member(childRel, st, 'file'), abs: path.join(root, childRel) });
      }
      // sockets, FIFOs and devices have no place in a data directory: left out
    }
  };
  await walk('');
  return out;
}

/**
 * Spread the files over `n` parts, balanced by bytes (largest first, each to the lightest
 * part). Every directory goes into part 0, first, so that extracting part 0 alone gives the
 * directory tree with its modes.
 */
export function distributeFiles(entries: DataEntry[], n: number): DataEntry[][] {
  const parts: DataEntry[][] = Array.from({ length: n }, () => []);
  const load = new Array<number>(n).fill(0);
  parts[0].push(...entries.filter((e) => e.type === 'dir'));
  const files = entries.filter((e) => e.type === 'file').sort((a, b) => b.size - a.size);
  for (const f of files) {
    let k = 0;
    for (let j = 1; j < n; j++) if (load[j] < load[k]) k = j;
    parts[k].push(f);
    load[k] += f.size + 512;
  }
  // Within a part, in path order: neighbours compress better and tar output reads naturally.
  for (const p of parts)
    p.sort((a, b) => (a.type === b.type ? a.path.localeCompare(b.path) : a.type === 'dir' ? -1 : 1));
  return parts;
}

/** What one file became in the archive. */
export interface StoredFile extends Omit<BaseFileEntry, 'part'> {
  /** Of the content stored, in the backup's manifest checksum algorithm (hex). */
  checksum: string;
}

export const READ_CHUNK = 1024 * 1024;

/**
 * One file as a tar member: header, content, padding. The header holds its size when opened;
 * content read short is padded with zeros to it, content grown since is cut at it (WAL
 * replay repairs both, the backup being torn anyway). Undefined when the file vanished.
 * Yields the chunks (read on demand: back-pressure reaches the disk); the checksum covers the content stored.
 */
export async function* readFileMember(
  entry: DataEntry,
  opts: {
    checksum: ManifestChecksumAlgorithm;
    afterOpen?: (relPath: string) => Promise<void> | void;
    /**
     * Read into this buffer (READ_CHUNK bytes) instead of a fresh one per read: only for a
     * consumer that is done with each chunk before it asks for the next.
     */
    reuse?: Buffer;
  },
): AsyncGenerator<Buffer, StoredFile | undefined> {
  const { afterOpen, reuse } = opts;
  let fh;
  try {
    fh = await open(entry.abs!, 'r');
  } catch (e) {
    if (missing(e)) return undefined;
    throw e;
  }
  try {
    const st = await fh.stat();
    const size = Number(st.size);
    const mtime = Math.floor(Number(st.mtimeMs) / 1000);
    await afterOpen?.(entry.path);
    yield tarHeader({ ...entry, size, mtime });
    const hash = fileChecksum(opts.checksum);
    let done = 0;
    let changed: StoredFile['changed'];
    while (done < size) {
      const want = Math.min(READ_CHUNK, size - done);
      // without `reuse`, a fresh buffer per read: a stream downstream may still hold the previous one
      const buf = reuse && reuse.length >= want ? reuse.subarray(0, want) : Buffer.allocUnsafeSlow(want);
      const { bytesRead } = await fh.read(buf, 0, want, done);
      if (bytesRead === 0) {
        changed = 'shorter';
        buf.fill(0);
      }
      const chunk = bytesRead === 0 ? buf : buf.subarray(0, bytesRead);
      hash.update(chunk);
      done += chunk.length;
      yield chunk;
    }
    const pad = contentPadding(size);
    if (pad.length > 0) yield pad;
    if (!changed && Number((await fh.stat()).size) > size) changed = 'longer';
    return {
      path: entry.path,
      size,
      mtime,
      checksum: hash.digest(),
      ...(changed ? { changed } : {}),
    };
  } finally {
    await fh.close();
  }
}

/** A small in-memory file (backup_label, the manifests) as a tar member. */
export function memoryMember(
  rel: string,
  body: Buffer,
  like: Pick<TarMember, 'uid' | 'gid'>,
  mtime: number,
  checksum: ManifestChecksumAlgorithm,
): { chunks: Buffer[]; file: StoredFile } {
  return {
    chunks: [
      tarHeader({
        path: rel,
        type: 'file',
        size: body.length,
        mode: 0o600,
        uid: like.uid,
        gid: like.gid,
        mtime,
      }),
      body,
      contentPadding(body.length),
    ],
    file: { path: rel, size: body.length, mtime, checksum: checksumOf(checksum, body) },
  };
}

function gmt(seconds: number): string {
  return new Date(seconds * 1000)
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, ' GMT');
}

/**
 * A PostgreSQL backup_manifest (version 1) of the files stored, so that `pg_verifybackup -n`
 * can check a restored directory with stock tools. The files' checksums are `algorithm`'s; the
 * manifest's own is SHA-256 (always, in PostgreSQL) and covers every line but the last.
 */
export function postgresBackupManifest(
  files: StoredFile[],
  wal: { timeline: number; startLsn: string; stopLsn: string },
  algorithm: ManifestChecksumAlgorithm,
): Buffer {
  const lines = files.map(
    (f) =>
      `{ "Path": ${JSON.stringify(f.path)}, "Size": ${f.size}, "Last-Modified": "${gmt(f.mtime)}", ` +
      `"Checksum-Algorithm": "${algorithm}", "Checksum": "${f.checksum}" }`,
  );
  const body =
    '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n' +
    lines.join(',\n') +
    '\n],\n"WAL-Ranges": [\n' +
    `{ "Timeline": ${wal.timeline}, "Start-LSN": "${wal.startLsn}", "End-LSN": "${wal.stopLsn}" }\n` +
    '],\n';
  const sum = createHash('sha256').update(body).digest('hex');
  return Buffer.from(`${body}"Manifest-Checksum": "${sum}"}\n`);
}
