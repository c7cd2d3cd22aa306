import { spawn, type ChildProcess } from 'node:child_process';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { DbcrateError, ErrorCodes, redact } from '@dbcrate/core';

const STDERR_KEEP = 64 * 1024;

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
 * Spawn a PostgreSQL client tool. Passwords travel in the environment (PGPASSWORD), never
 * in argv, which other users can read in `ps`.
 */
export function runTool(
  tool: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  opts: { stdin?: 'pipe' | 'ignore'; label?: string } = {},
): ToolRun {
  const label = opts.label ?? tool.split('/').pop() ?? tool;
  const child = spawn(tool, args, {
    env,
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    stderr = (stderr + d).slice(-STDERR_KEEP);
  });
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  child.stdout!.pipe(out, { end: false });

  const exited = new Promise<void>((resolve, reject) => {
    child.once('error', (e) => {
      const err = new DbcrateError(ErrorCodes.DB_TOOL_FAILED, `${label} could not be started: ${e.message}`);
      out.destroy(err);
      reject(err);
    });
    child.once('close', (code, signal) => {
      if (code === 0) {
        out.end();
        resolve();
        return;
      }
      const tail = lastLines(redact(stderr), 8);
      const err = new DbcrateError(
        ErrorCodes.DB_TOOL_FAILED,
        `${label} failed (${signal ? `signal ${signal}` : `exit code ${code}`})${tail ? `: ${tail}` : ''}`,
      );
      out.destroy(err);
      reject(err);
    });
  });
  exited.catch(() => undefined); // observed by the caller; avoid unhandled rejection noise

  return {
    child,
    stdout: out,
    exited,
    stderrTail: () => lastLines(redact(stderr), 8),
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    },
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
