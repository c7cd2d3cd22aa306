import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';

/**
 * `rm -r` of a directory that another user can write into (the server's user, while recover
 * runs as root). Node's rm walks by path (lstat, then readdir), so a subdirectory swapped for
 * a symlink in between makes root delete wherever it points; GNU rm walks with openat and
 * O_NOFOLLOW and is safe against that. Not as root, nothing is gained by another user's race.
 */
export function removeTree(path: string): Promise<void> {
  if (process.getuid?.() !== 0) return rm(path, { recursive: true, force: true });
  return new Promise((resolve, reject) =>
    execFile('rm', ['-rf', '--one-file-system', '--', path], (e) => (e ? reject(e) : resolve())),
  );
}
