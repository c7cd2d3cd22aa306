import { spawn } from 'node:child_process';
import { Writable, finished } from 'node:stream';
import { lstat, mkdir, readdir, rm, rmdir } from 'node:fs/promises';
import * as path from 'node:path';
import { DbcrateError, ErrorCodes, redact, type BufferPool } from '@dbcrate/core';
import type { BaseFileEntry } from './base.manifest';

/** Every file the manifest lists is there with its size (the parts could each be whole yet not all the backup's). */
export async function checkListing(dir: string, backupId: string, files: BaseFileEntry[]): Promise<void> {
  const missing: string[] = [];
  for (const f of files) {
    const st = await lstat(path.join(dir, f.path)).catch(() => undefined);
    if (!st?.isFile() || st.size !== f.size) {
      missing.push(
        `${f.path} (${st ? `${st.isFile() ? st.size : 'not a file'}` : 'missing'}, listed ${f.size})`,
      );
      if (missing.length >= 5) break;
    }
  }
  if (missing.length > 0) {
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      `base backup ${backupId} did not restore the files its manifest lists: ${missing.join(', ')}`,
      { hint: 'the backup is damaged or was tampered with; use another base backup' },
    );
  }
}

/** Remove everything inside `dir` (which was empty before we started), and `dir` itself if we made it. */
export async function undoExtract(dir: string, created: boolean): Promise<void> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  for (const name of entries) {
    await rm(path.join(dir, name), { recursive: true, force: true }).catch(() => undefined);
  }
  if (created) await rmdir(dir).catch(() => undefined);
}

/** Like a pipeline into a stream that closed: tar's own exit code says why. */
function closedEarly(): Error {
  return Object.assign(new Error('tar closed its input early'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

/** `tar -x` reading stdin into `dir`; resolves on exit 0. */
export function extractTar(tarPath: string, dir: string) {
  // -p: keep the modes PostgreSQL wrote (0600/0700). As root GNU tar also restores the
  // owner recorded in the archive ("postgres"), which is what the server needs.
  const child = spawn(tarPath, ['-x', '-p', '-f', '-', '-C', dir], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    stderr = (stderr + d).slice(-16 * 1024);
  });
  child.stdin!.on('error', () => undefined); // EPIPE when tar stops early; its exit code says why
  const exited = new Promise<void>((resolve, reject) => {
    child.once('error', (e) =>
      reject(
        new DbcrateError(ErrorCodes.CONFIG, `cannot run ${tarPath}: ${e.message}`, {
          hint: 'install GNU tar (apt-get install tar)',
          cause: e,
        }),
      ),
    );
    child.once('close', (code, signal) => {
      if (code === 0) return resolve();
      const tail = redact(stderr).trim().split('\n').slice(-8).join(' | ');
      reject(
        new DbcrateError(
          ErrorCodes.STORAGE_IO,
          `tar could not extract the base backup into ${dir} (${signal ? `signal ${signal}` : `exit code ${code}`})${tail ? `: ${tail}` : ''}`,
          { hint: 'check free space and permissions of the target directory' },
        ),
      );
    });
  });
  exited.catch(() => undefined);
  const stdin = child.stdin!;
  return {
    stdin,
    /**
     * tar's stdin as the chain's last stage, giving each chunk back to `pool` once the pipe
     * has taken it (a write queued in libuv still holds it until then).
     */
    input: (pool: BufferPool): Writable =>
      new Writable({
        highWaterMark: 0,
        write(chunk: Buffer, _enc, cb) {
          if (stdin.destroyed) return cb(closedEarly());
          stdin.write(chunk, (err) => {
            // a pipe that tar closed meanwhile calls back without an error
            if (err || stdin.destroyed) return cb(err ?? closedEarly());
            pool.giveBack(chunk);
            cb();
          });
        },
        final(cb) {
          // end() on a pipe tar has already closed would never call back
          if (stdin.destroyed) return cb(closedEarly());
          stdin.end();
          finished(stdin, { readable: false }, (err) => cb(err ?? null));
        },
        destroy(err, cb) {
          if (err) stdin.destroy();
          cb(err);
        },
      }),
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
  };
}

/**
 * The parts are extracted at once, but only part 0 holds the directories: a file of another
 * part whose directory part 0's tar has not made yet cannot be opened. So every directory a
 * listed file needs is made first (0700; part 0's tar then gives each its recorded mode and
 * owner). The paths come from the signed manifest and are checked anyway.
 */
export async function makeParentDirs(dir: string, backupId: string, files: BaseFileEntry[]): Promise<void> {
  const parents = new Set<string>();
  for (const f of files) {
    const parts = f.path.split('/');
    if (f.path.startsWith('/') || parts.some((c) => c === '' || c === '.' || c === '..')) {
      throw new DbcrateError(
        ErrorCodes.INTEGRITY,
        `base backup ${backupId} lists a file outside the data directory: ${JSON.stringify(f.path)}`,
        { hint: 'the backup is damaged or was tampered with; use another base backup' },
      );
    }
    for (let i = 1; i < parts.length; i++) parents.add(parts.slice(0, i).join('/'));
  }
  // parents before children
  for (const p of [...parents].sort(
    (a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b),
  )) {
    await mkdir(path.join(dir, p), { mode: 0o700 }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw e;
    });
  }
}
