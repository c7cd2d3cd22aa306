import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { DecryptionKey, TrustPolicy } from '@dbcrate/crypto';
import {
  fetchWal,
  fetchWalObject,
  PREFETCH_DIR,
  shellQuote,
  WalServer,
  type WalFetchOptions,
  type WalIndex,
} from '@dbcrate/pitr';
import type { Storage } from '@dbcrate/storage';
import { trustPaths } from '../key-files';

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
  socketDir?: string;
  from: string;
  keyPath: string;
  databaseId: string;
  /** --trust files and --allow-unsigned, for a restore_command that fetches (and checks) itself. */
  trust?: string[];
  allowUnsigned?: boolean;
}): string {
  const fetch = [process.execPath, resolve(process.argv[1]), 'wal-fetch'];
  const tail = o.socketDir
    ? ['--from-socket', o.socketDir]
    : ['--from', o.from, '--key', o.keyPath, '--database-id', o.databaseId];
  if (!o.socketDir) {
    for (const t of trustPaths(o.trust)) tail.push('--trust', resolve(t));
    if (o.allowUnsigned) tail.push('--allow-unsigned');
  }
  return (
    `f=%f; s=${PREFETCH_DIR}; if [ -e "$s/$f.missing" ]; then exit 1; fi; ` +
    `case "$f" in *.history) cp "$s/$f" %p 2>/dev/null && exit 0;; *) mv -f "$s/$f" %p 2>/dev/null && exit 0;; esac; ` +
    `exec ${fetch.map(word).join(' ')} %f %p ${tail.map(word).join(' ')}`
  );
}

/** Serve WAL to restore_command from this process, with the key it already holds. */
export function serveWal(o: {
  storage: Storage;
  databaseId: string;
  key: DecryptionKey;
  trust?: TrustPolicy;
  index: WalIndex;
  owner?: { uid: number; gid: number };
}): Promise<WalServer> {
  const fetch: WalFetchOptions = {
    storage: o.storage,
    databaseId: o.databaseId,
    keys: [o.key],
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

/** After promotion nothing may call restore_command again: take it out of postgresql.auto.conf. */
export async function removeRestoreCommand(dir: string): Promise<void> {
  const path = join(dir, 'postgresql.auto.conf');
  const text = await readFile(path, 'utf8');
  const kept = text
    .split('\n')
    .map((l) =>
      /^\s*restore_command\s*=/.test(l) ? '# restore_command removed by dbcrate recover after promotion' : l,
    );
  await writeFile(path, kept.join('\n'));
}
