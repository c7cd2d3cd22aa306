import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Harness directories (`<tmp>/<prefix>*`) whose owning test process has died (SIGKILL,
 * crash): the owner's pid is in `ownerFile`. A directory without one is being created
 * right now, or is not ours, and is left alone.
 */
export function staleHarnessDirs(prefix: string, ownerFile: string, tmp = os.tmpdir()): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(tmp).filter((n) => n.startsWith(prefix));
  } catch {
    return [];
  }
  const stale: string[] = [];
  for (const name of names) {
    const baseDir = path.join(tmp, name);
    let owner: number;
    try {
      owner = Number(fs.readFileSync(path.join(baseDir, ownerFile), 'utf8').trim());
    } catch {
      continue;
    }
    if (owner && !pidAlive(owner)) stale.push(baseDir);
  }
  return stale;
}
