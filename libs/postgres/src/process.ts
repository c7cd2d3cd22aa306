import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { DbcrateError, ErrorCodes, redact } from '@dbcrate/core';
import { childEnv } from './conninfo';

/** How much of a tool's stderr is kept for the error message (the tail). */
export const STDERR_TAIL_BYTES = 64 * 1024;
const MESSAGE_LINES = 12;

export interface SpawnPgToolOptions {
  /** The libpq environment (`toLibpqEnv(url).env`); laid over process.env minus inherited PG* target variables. */
  env: Record<string, string>;
  /** Inherited variables to drop (e.g. LC_ALL, so that LC_MESSAGES=C in `env` takes effect). */
  unsetEnv?: readonly string[];
  stdin?: 'pipe' | 'ignore';
  stdout?: 'pipe' | 'ignore';
  cwd?: string;
  /** Aborting kills the tool (SIGTERM) and rejects `done` with E_INTERRUPTED. */
  signal?: AbortSignal;
  /** Each stderr line, redacted (e.g. pg_dump --verbose progress). */
  onStderrLine?: (line: string) => void;
}

export interface PgToolResult {
  exitCode: number;
  /** The redacted tail of stderr (warnings, --verbose output). */
  stderr: string;
}

export interface PgToolProcess {
  readonly child: ChildProcess;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  /** Resolves when the tool exits 0; rejects with E_DB_TOOL_FAILED / E_DB_TOOL_MISSING / E_INTERRUPTED. */
  readonly done: Promise<PgToolResult>;
  /** The redacted stderr tail so far. */
  stderrTail(): string;
  kill(signal?: NodeJS.Signals): void;
}

/** Keeps the last `limit` bytes of a stream. */
class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit: number) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size - this.chunks[0].length >= this.limit) this.size -= this.chunks.shift()!.length;
  }
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString('utf8');
  }
}

// A URL with a password in it, or a password=… conninfo keyword.
const SECRET_ARG = /:\/\/[^/@\s]*:[^@\s]*@|\bpassword\s*=/i;

/**
 * Spawn pg_dump / pg_restore / psql / pg_basebackup with credentials in the environment only.
 * Nothing is passed through a shell; stdout is the caller's to stream. The one spawner for
 * PostgreSQL tools: the pipeline's `runTool` is built on it, so its argv guard is the one
 * production runs.
 */
export function spawnPgTool(
  toolPath: string,
  args: readonly string[],
  opts: SpawnPgToolOptions,
): PgToolProcess {
  const name = path.basename(toolPath);
  // argv is world-readable (ps, /proc/*/cmdline): a credential there is a bug, not a choice.
  if (args.some((a) => SECRET_ARG.test(a))) {
    throw new DbcrateError(
      ErrorCodes.INTERNAL,
      `Refusing to start ${name}: a password would appear on its command line`,
    );
  }
  const env = childEnv(opts.env);
  for (const k of opts.unsetEnv ?? []) delete env[k];
  const child = spawn(toolPath, [...args], {
    env,
    cwd: opts.cwd,
    stdio: [opts.stdin ?? 'ignore', opts.stdout ?? 'pipe', 'pipe'],
    signal: opts.signal,
  });
  const tail = new TailBuffer(STDERR_TAIL_BYTES);
  let partial = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    tail.push(chunk);
    if (opts.onStderrLine) {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) if (l.trim()) opts.onStderrLine(redact(l));
    }
  });
  const stderrTail = () => redact(tail.text());

  const done = new Promise<PgToolResult>((resolve, reject) => {
    let spawnError: (Error & { code?: string }) | undefined;
    const settle = (code: number | null, signal: NodeJS.Signals | null) => {
      if (partial.trim() && opts.onStderrLine) opts.onStderrLine(redact(partial));
      const stderr = stderrTail();
      if (spawnError?.name === 'AbortError' || (opts.signal?.aborted && code !== 0)) {
        reject(
          new DbcrateError(ErrorCodes.INTERRUPTED, `${name} was stopped (interrupted)`, {
            cause: spawnError,
          }),
        );
      } else if (spawnError && spawnError.code === 'ENOENT') {
        reject(
          new DbcrateError(ErrorCodes.DB_TOOL_MISSING, `${toolPath} not found`, {
            hint: 'Install the PostgreSQL client tools matching the server (see findClientTools).',
            cause: spawnError,
          }),
        );
      } else if (spawnError) {
        reject(
          new DbcrateError(
            ErrorCodes.DB_TOOL_FAILED,
            redact(`Cannot run ${toolPath}: ${spawnError.message}`),
            { cause: spawnError },
          ),
        );
      } else if (code === 0) {
        resolve({ exitCode: 0, stderr });
      } else {
        reject(toolFailed(name, code, signal, stderr));
      }
    };
    child.on('error', (e: Error & { code?: string }) => {
      spawnError ??= e;
      // Never started: 'close' is not guaranteed to follow.
      if (child.pid === undefined) settle(null, null);
    });
    child.on('close', settle);
  });
  // Callers that only stream may attach late; avoid an unhandled rejection in between.
  done.catch(() => undefined);

  return {
    child,
    stdin: child.stdin,
    stdout: child.stdout,
    done,
    stderrTail,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
  };
}

function toolFailed(
  name: string,
  code: number | null,
  signal: NodeJS.Signals | null,
  stderr: string,
): DbcrateError {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '');
  const last = lines.slice(-MESSAGE_LINES).join('\n');
  const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
  let hint = `Read ${name}'s messages above; they come from PostgreSQL or the tool itself.`;
  if (/server version mismatch|aborting because of server version/i.test(stderr)) {
    hint = `${name} is older than the server; use the client tools of the server's major version (or newer).`;
  } else if (/password authentication failed|no password supplied/i.test(stderr)) {
    hint = 'Check the password in the connection URL (or PGPASSWORD / ~/.pgpass).';
  } else if (/permission denied/i.test(stderr)) {
    hint = 'The database user lacks a privilege; back up with the database owner or a superuser.';
  }
  return new DbcrateError(
    ErrorCodes.DB_TOOL_FAILED,
    `${name} ${how}${last ? `:\n${last}` : ' (no error output)'}`,
    { hint },
  );
}

export interface RunPgToolOptions extends Omit<SpawnPgToolOptions, 'stdin' | 'stdout'> {
  /** Written to the tool's stdin, then closed. */
  input?: string | Buffer;
  /** Fail instead of buffering more stdout than this (default 16 MiB). */
  maxStdoutBytes?: number;
}

/** Run a tool to completion and return its stdout, for small outputs (psql queries, --version). */
export async function runPgTool(
  toolPath: string,
  args: readonly string[],
  opts: RunPgToolOptions,
): Promise<{ stdout: string; stderr: string }> {
  const max = opts.maxStdoutBytes ?? 16 * 1024 * 1024;
  const proc = spawnPgTool(toolPath, args, {
    ...opts,
    stdin: opts.input !== undefined ? 'pipe' : 'ignore',
    stdout: 'pipe',
  });
  const chunks: Buffer[] = [];
  let size = 0;
  proc.stdout!.on('data', (c: Buffer) => {
    size += c.length;
    if (size > max) proc.kill();
    else chunks.push(c);
  });
  if (proc.stdin) {
    proc.stdin.on('error', () => undefined); // EPIPE if the tool exits early; its exit code tells why
    proc.stdin.end(opts.input);
  }
  try {
    const r = await proc.done;
    return { stdout: Buffer.concat(chunks).toString('utf8'), stderr: r.stderr };
  } catch (e) {
    if (size > max) {
      throw new DbcrateError(
        ErrorCodes.INTERNAL,
        `${path.basename(toolPath)} wrote more than ${max} bytes; use spawnPgTool to stream it`,
      );
    }
    throw e;
  }
}
