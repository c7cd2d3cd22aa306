import { constants, type Stats } from 'node:fs';
import { chmod, lstat, mkdtemp, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { DecryptionKey, TrustPolicy } from '@dbcrate/crypto';
import type { Storage } from '@dbcrate/storage';
import { shellQuote } from './recover';
import { removeTree } from './tree.remove';
import { fetchWal, fetchWalObject, PREFETCH_DIR, type WalFetchOptions } from './wal.fetch';
import type { WalIndex } from './windows';
import { WalServer } from './wal.serve';
import { writeAtomically } from './wal.write';

/** PostgreSQL expands %f/%p/%r anywhere in restore_command, even inside quotes: double every literal %. */
const word = (a: string) => shellQuote(a).replace(/%/g, '%%');

/**
 * restore_command for a recovered server. Most WAL files come from the prefetch spool with a
 * rename, history files (asked for more than once) with a copy, and a history file known to
 * be missing is answered at once: no dbcrate process for those. Anything else runs
 * `wal-fetch`: with `socketDir`, asking this recover process (the server holds no key nor
 * passphrase); without, fetching itself with the key file.
 */
export function restoreCommandFor(o: {
  /** The `dbcrate wal-fetch` command line to run (program and leading arguments). */
  walFetch: string[];
  socketDir?: string;
  /** The prefetch spool, when not pg_wal/dbcrate-prefetch (recover as root). */
  spoolDir?: string;
  /** Without `socketDir`: where `wal-fetch` fetches from, and the arguments that open the keys. */
  from?: string;
  databaseId?: string;
  readerArgs?: string[];
}): string {
  let tail: string[];
  if (o.socketDir) tail = ['--from-socket', o.socketDir];
  else if (o.from && o.databaseId && o.readerArgs)
    tail = ['--from', o.from, '--database-id', o.databaseId, ...o.readerArgs];
  else
    throw new DbcrateError(
      ErrorCodes.INTERNAL,
      'restore_command needs a WAL socket or the keys to fetch with',
    );
  return (
    `f=%f; s=${word(o.spoolDir ?? PREFETCH_DIR)}; if [ -e "$s/$f.missing" ]; then exit 1; fi; ` +
    // copied, not moved: history files and the last segment of --latest are asked for again
    `case "$f" in *.history) cp "$s/$f" %p 2>/dev/null && exit 0;; *) if [ -e "$s/$f.keep" ]; then cp "$s/$f" %p 2>/dev/null && exit 0; fi; ` +
    `mv -f "$s/$f" %p 2>/dev/null && exit 0;; esac; ` +
    `exec ${o.walFetch.map(word).join(' ')} %f %p ${tail.map(word).join(' ')}`
  );
}

/** Serve WAL to restore_command from this process, with the key it already holds. */
export function serveWal(o: {
  storage: Storage;
  databaseId: string;
  keys: DecryptionKey[];
  trust?: TrustPolicy;
  index: WalIndex;
  owner?: { uid: number; gid: number };
}): Promise<WalServer> {
  const fetch: WalFetchOptions = {
    storage: o.storage,
    databaseId: o.databaseId,
    keys: o.keys,
    trust: o.trust,
  };
  return WalServer.start({
    owner: o.owner,
    fetch: (name) => {
      const known = o.index.files.get(name);
      return known ? fetchWalObject(fetch, name, known.key, known.sha256) : fetchWal(fetch, name);
    },
  });
}

/**
 * After promotion nothing may call restore_command again: take it out of postgresql.auto.conf.
 * recover may run as root while the server's user owns the directory (and a superuser of the
 * running server can run commands as that user): never follow a link there, and replace the
 * file by rename, so that a kill leaves the old or the new file, never one cut short that lost
 * archive_mode=off.
 */
export async function removeRestoreCommand(dir: string): Promise<void> {
  const path = join(dir, 'postgresql.auto.conf');
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch((e: NodeJS.ErrnoException) => {
    throw new DbcrateError(
      ErrorCodes.RECOVERY_FAILED,
      `cannot remove restore_command from ${path}: ${e.code === 'ELOOP' ? 'it is a symlink' : e.code}`,
      { hint: 'the server is promoted; remove the restore_command line by hand' },
    );
  });
  let text: string;
  let st: Stats;
  try {
    st = await fh.stat();
    text = await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
  const kept = text
    .split('\n')
    .map((l) =>
      /^\s*restore_command\s*=/.test(l) ? '# restore_command removed by dbcrate recover after promotion' : l,
    );
  await writeAtomically(path, Buffer.from(kept.join('\n')), { uid: st.uid, gid: st.gid });
}

const SPOOL_PREFIX = 'dbcrate-spool-';
const SPOOL_PID = 'recover.pid';

/**
 * recover as root: a root-owned parent (0711) in the sticky temp dir for the prefetch spool,
 * which the server's user cannot swap for a symlink. It holds decrypted WAL, so those left by
 * a killed recover (their pid is gone) are removed first.
 */
export async function makeSpoolParent(): Promise<string> {
  const tmp = tmpdir();
  for (const name of await readdir(tmp).catch(() => [] as string[])) {
    if (!name.startsWith(SPOOL_PREFIX)) continue;
    const p = join(tmp, name);
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isDirectory() || st.uid !== process.getuid?.()) continue;
    const pid = Number(await readFile(join(p, SPOOL_PID), 'utf8').catch(() => '0'));
    if (pid > 0 ? alive(pid) : Date.now() - st.mtimeMs < 60_000) continue; // in use, or just made
    await removeTree(p).catch(() => undefined);
  }
  const parent = await mkdtemp(join(tmp, SPOOL_PREFIX));
  await chmod(parent, 0o711);
  await writeFile(join(parent, SPOOL_PID), String(process.pid), { mode: 0o600, flag: 'wx' });
  return parent;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
