import type { ChildProcess } from 'node:child_process';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { spawnPgTool } from '@dbcrate/postgres';

export interface ToolRun {
  child: ChildProcess;
  /** stdout that ends only once the tool has exited 0; errors otherwise (so an upload never completes on a failed dump). */
  stdout: Readable;
  /** Resolves when the tool exits 0; rejects with E_DB_TOOL_FAILED (last stderr lines, redacted). */
  exited: Promise<void>;
  stderrTail(): string;
  kill(): void;
}

/**
 * Run a PostgreSQL client tool through `spawnPgTool` (the one spawner: passwords travel in
 * the environment, PGPASSWORD, and a credential in argv is refused). `env` is the libpq
 * environment (`toLibpqEnv(url).env`), laid over the scrubbed process environment.
 */
export function runTool(
  tool: string,
  args: string[],
  env: Record<string, string>,
  opts: { stdin?: 'pipe' | 'ignore'; label?: string; unsetEnv?: readonly string[] } = {},
): ToolRun {
  const proc = spawnPgTool(tool, args, {
    env,
    unsetEnv: opts.unsetEnv,
    stdin: opts.stdin ?? 'ignore',
    stdout: 'pipe',
  });
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  // The failure is reported through `exited`; a caller that only drains stdout must not
  // crash the process with an unhandled 'error' event.
  out.on('error', () => undefined);
  proc.stdout!.pipe(out, { end: false });
  const exited = proc.done.then(
    () => {
      out.end();
    },
    (e: unknown) => {
      out.destroy(e as Error);
      throw e;
    },
  );
  exited.catch(() => undefined); // observed by the caller; avoid unhandled rejection noise
  proc.stdin?.on('error', () => undefined); // EPIPE when the tool exits early; `exited` says why

  return {
    child: proc.child,
    stdout: out,
    exited,
    stderrTail: () => lastLines(proc.stderrTail(), 8),
    kill: () => proc.kill('SIGTERM'),
  };
}

function lastLines(s: string, n: number): string {
  return s.trim().split('\n').slice(-n).join(' | ');
}

/** A sink that throws data away (used to drain a stream for checking). */
export function devNull(): Writable {
  return new Writable({
    write(_c, _e, cb) {
      cb();
    },
  });
}
