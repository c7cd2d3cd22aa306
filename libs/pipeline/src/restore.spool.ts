import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { logger } from '@dbcrate/core';

/** Spool folders are `<spool dir>/dbcrate-restore-XXXXXX/`, marked with the owner's pid. */
export const SPOOL_PREFIX = 'dbcrate-restore-';
const OWNER_FILE = 'owner.pid';

export interface RestoreSpool {
  dir: string;
  /** The plaintext dump inside `dir`. */
  file: string;
  /** Remove the folder and what it holds; safe to call twice. */
  remove(): Promise<void>;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Spool folders whose owner has died (killed with SIGKILL, a crash, a power cut) still hold
 * a decrypted dump: remove them. A folder without an owner file is being created right now
 * (or is not ours) and is left alone; so is one whose owner is alive or another user's.
 */
export function sweepStaleSpools(parent: string): string[] {
  let names: string[];
  try {
    names = readdirSync(parent).filter((n) => n.startsWith(SPOOL_PREFIX));
  } catch {
    return [];
  }
  const swept: string[] = [];
  for (const name of names) {
    const dir = join(parent, name);
    let owner: number;
    try {
      owner = Number(readFileSync(join(dir, OWNER_FILE), 'utf8').trim());
    } catch {
      continue;
    }
    if (!Number.isInteger(owner) || owner <= 0 || pidAlive(owner)) continue;
    try {
      rmSync(dir, { recursive: true, force: true });
      swept.push(dir);
    } catch {
      // not ours to remove (another user's): leave it
    }
  }
  if (swept.length) logger().warn({ swept }, 'removed decrypted spools left by killed restores');
  return swept;
}

/**
 * A private (0700) spool folder for the decrypted dump of a parallel restore. It is removed
 * by `remove()` on every normal and failed path, by an exit hook when the process exits
 * without unwinding (a second ^C), and by the next restore's sweep after a SIGKILL.
 */
export async function createRestoreSpool(parent: string, fileName: string): Promise<RestoreSpool> {
  sweepStaleSpools(parent);
  const dir = await mkdtemp(join(parent, SPOOL_PREFIX));
  const onExit = () => rmSync(dir, { recursive: true, force: true });
  process.once('exit', onExit);
  try {
    await writeFile(join(dir, OWNER_FILE), `${process.pid}\n`, { mode: 0o600 });
  } catch (e) {
    process.removeListener('exit', onExit);
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    dir,
    file: join(dir, fileName),
    remove: async () => {
      await rm(dir, { recursive: true, force: true });
      process.removeListener('exit', onExit);
    },
  };
}
