import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
} from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { logger } from '@dbcrate/core';

/** Spool folders are `<spool dir>/dbcrate-restore-XXXXXX/`, marked with the owner's identity. */
export const SPOOL_PREFIX = 'dbcrate-restore-';
const OWNER_FILE = 'owner.pid';
const OWNER_MAX_BYTES = 256;

export interface RestoreSpool {
  dir: string;
  /** The plaintext dump inside `dir`. */
  file: string;
  /** Remove the folder and what it holds; safe to call twice. */
  remove(): Promise<void>;
}

/** What identifies a process across pid reuse and reboots: pid, boot id, start time. */
interface OwnerRecord {
  pid: number;
  boot?: string;
  start?: string;
}

function bootId(): string | undefined {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); undefined off Linux. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) is in parentheses and may hold spaces: split after it
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19];
  } catch {
    return undefined;
  }
}

function ownerRecord(): OwnerRecord {
  return { pid: process.pid, boot: bootId(), start: startTime(process.pid) };
}

function ownerAlive(owner: OwnerRecord): boolean {
  if (owner.boot && owner.boot !== bootId()) return false;
  try {
    process.kill(owner.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  // a live pid that started at another time is a reused pid, not our owner
  if (owner.start) {
    const now = startTime(owner.pid);
    if (now !== undefined && now !== owner.start) return false;
  }
  return true;
}

/**
 * Read the owner record without following symlinks and without blocking: the spool parent is
 * often /tmp, where anyone can plant a FIFO or a symlink under a name we would read.
 */
function readOwner(dir: string): OwnerRecord | undefined {
  let fd: number;
  try {
    fd = openSync(join(dir, OWNER_FILE), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== process.getuid?.()) return undefined;
    const buf = Buffer.alloc(OWNER_MAX_BYTES);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const text = buf.subarray(0, n).toString('utf8').trim();
    if (/^\d+$/.test(text)) return { pid: Number(text) }; // written by an earlier version
    const parsed = JSON.parse(text) as OwnerRecord;
    if (!Number.isInteger(parsed.pid) || parsed.pid <= 0) return undefined;
    return parsed;
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Only a real folder of ours, private as we create it, is a spool we may remove. */
function isOurSpool(dir: string): boolean {
  try {
    const st = lstatSync(dir);
    return st.isDirectory() && st.uid === process.getuid?.() && (st.mode & 0o777) === 0o700;
  } catch {
    return false;
  }
}

/**
 * Spool folders whose owner has died (killed with SIGKILL, a crash, a power cut) still hold
 * a decrypted dump: remove them. A folder without an owner record is being created right now
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
    if (!isOurSpool(dir)) continue;
    const owner = readOwner(dir);
    if (!owner || owner.pid === process.pid || ownerAlive(owner)) continue;
    try {
      rmSync(dir, { recursive: true, force: true });
      swept.push(dir);
    } catch {
      // cannot remove it: leave it
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
    await writeFile(join(dir, OWNER_FILE), `${JSON.stringify(ownerRecord())}\n`, { mode: 0o600, flag: 'wx' });
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
