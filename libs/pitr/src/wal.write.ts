import { constants } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';

// Only node built-ins here: restore_command's fast path (bin/dbcrate.js) loads this alone.

/**
 * Write atomically (temp + rename) so PostgreSQL never reads a half-written file. recover,
 * run as root, writes into a directory the server's OS user can write (the spool): a symlink
 * planted at the temp name must not make root write or chown its target. So the temp file is
 * created with O_EXCL|O_NOFOLLOW (a stale one, or a link, is unlinked first, never followed)
 * and chowned through its descriptor; rename replaces a name, never a link's target.
 */
export async function writeAtomically(
  path: string,
  data: Uint8Array,
  owner?: { uid: number; gid: number },
): Promise<void> {
  const tmp = `${path}.dbcrate-tmp`;
  await rm(tmp, { force: true });
  const fh = await open(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await fh.writeFile(data);
    if (owner) await fh.chown(owner.uid, owner.gid);
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}
