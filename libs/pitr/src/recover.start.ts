import { execFile, spawn } from 'node:child_process';
import { mkdir, open, readFile, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { promisify } from 'node:util';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { RecoveryAction } from './recover';
import { removeTree } from './tree.remove';
import { PREFETCH_DIR } from './wal.fetch';

const execFileP = promisify(execFile);

export interface RecoveryOutcome {
  state: 'promoted' | 'paused' | 'shut down';
  /** Where replay stopped: "redo done at" (promote), else the stop record's description. */
  lsn?: string;
  /** Time of the last transaction replayed, or of the stop record. */
  time?: string;
  stoppedAt?: string;
  timeline?: number;
  walFilesRestored: number;
  /** The restored WAL segment furthest along (the highest segment number). */
  lastSegmentRestored?: string;
  logFile: string;
}

export interface RecoveryLogState {
  outcome: Omit<RecoveryOutcome, 'state' | 'logFile'>;
  promoted: boolean;
  paused: boolean;
  shutdown: boolean;
  failed?: string;
  lastFatal?: string;
  exited: boolean;
}

/**
 * What PostgreSQL's log says about a recovery, fed as it grows (a partial last line waits
 * for its end). The server runs with lc_messages=C, so these English lines are what it writes.
 */
export class RecoveryLogReader {
  private readonly o: Omit<RecoveryOutcome, 'state' | 'logFile'> = { walFilesRestored: 0 };
  private promoted = false;
  private paused = false;
  private shutdown = false;
  private exited = false;
  private lastFatal?: string;
  /** Any FATAL, a client's too: the reason given when the server stops and nothing better was logged. */
  private anyFatal?: string;
  /** The startup process's pid (from "[pid]" in the line prefix), once a recovery line names it. */
  private startupPid?: string;
  private rest = '';
  /** WAL segments (not history files) restored: what replay progress counts. */
  segmentsRestored = 0;
  /** The last lines seen, for an error message. */
  readonly tail: string[] = [];

  feed(text: string): void {
    const lines = (this.rest + text).split('\n');
    this.rest = lines.pop() ?? '';
    for (const l of lines) this.line(l);
  }

  /** The log is complete: a last line without a newline counts too. */
  end(): void {
    if (this.rest) this.line(this.rest);
    this.rest = '';
  }

  private line(line: string): void {
    if (line.trim()) {
      this.tail.push(line);
      if (this.tail.length > 20) this.tail.shift();
    }
    const o = this.o;
    let m: RegExpExecArray | null;
    if ((m = /restored log file "(.*)" from archive/.exec(line))) {
      o.walFilesRestored++;
      if (/^[0-9A-F]{24}$/.test(m[1])) {
        this.segmentsRestored++;
        // the segment number is the last 16 hex digits: compare those, whatever the timeline
        if (!o.lastSegmentRestored || m[1].slice(8) >= o.lastSegmentRestored.slice(8))
          o.lastSegmentRestored = m[1];
      }
    }
    if ((m = /recovery stopping (.*)$/.exec(line))) {
      o.stoppedAt = m[1];
      const time = /, time (.+)$/.exec(m[1]);
      if (time) o.time = time[1];
      const lsn = /WAL location \(LSN\) "([0-9A-F]+\/[0-9A-F]+)"/.exec(m[1]);
      if (lsn) o.lsn = lsn[1];
    }
    if ((m = /redo done at ([0-9A-F]+\/[0-9A-F]+)/.exec(line))) o.lsn = m[1];
    if ((m = /last completed transaction was at log time (.+)$/.exec(line))) o.time = m[1];
    if ((m = /selected new timeline ID: (\d+)/.exec(line))) o.timeline = Number(m[1]);
    if (/database system is ready to accept connections/.test(line)) this.promoted = true;
    if (/pausing at the end of recovery|recovery has paused/.test(line)) this.paused = true;
    if (/shutdown at recovery target/.test(line)) this.shutdown = true;
    const pid = /\[(\d+)\]/.exec(line)?.[1];
    if (pid && /starting (point-in-time|archive) recovery|restored log file|redo starts at/.test(line))
      this.startupPid ??= pid;
    if ((m = /(?:FATAL|PANIC):\s+(.*)$/.exec(line))) {
      if (!/the database system is (starting up|not yet accepting connections|in recovery mode)/.test(m[1])) {
        this.anyFatal = m[1];
        // A client's FATAL (a wrong password, say, once hot standby accepts connections) says
        // nothing about recovery: only the startup process's, or one before it is known, counts.
        if (!(pid && this.startupPid && pid !== this.startupPid)) this.lastFatal = m[1];
      }
    }
    if (/database system is shut down|startup process \(PID \d+\) exited with exit code/.test(line))
      this.exited = true;
  }

  state(): RecoveryLogState {
    const failed =
      this.exited && !this.shutdown
        ? (this.lastFatal ?? this.anyFatal ?? 'the server stopped during recovery')
        : undefined;
    return {
      outcome: { ...this.o },
      promoted: this.promoted,
      paused: this.paused,
      shutdown: this.shutdown,
      failed,
      lastFatal: this.lastFatal,
      exited: this.exited,
    };
  }
}

/** What PostgreSQL's log says about a recovery, line by line (the whole text at once). */
export function readRecoveryLog(text: string): RecoveryLogState {
  const r = new RecoveryLogReader();
  r.feed(text);
  r.end();
  return r.state();
}

/** Reads a growing file from where the last read stopped (no re-reading of the whole log). */
export class LogFollower {
  private offset = 0;
  private fh?: FileHandle;
  private readonly decoder = new StringDecoder('utf8');
  private readonly buf = Buffer.alloc(64 * 1024);

  constructor(readonly path: string) {}

  /** What was appended since the last call ('' when nothing). */
  async read(): Promise<string> {
    this.fh ??= await open(this.path, 'r');
    let out = '';
    for (;;) {
      const { bytesRead } = await this.fh.read(this.buf, 0, this.buf.length, this.offset);
      if (bytesRead === 0) return out;
      this.offset += bytesRead;
      out += this.decoder.write(this.buf.subarray(0, bytesRead));
    }
  }

  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
  }
}

/** postmaster.pid exists and names a live process (pg_ctl -W returns before the server is up, so allow a moment). */
async function postmasterAlive(dir: string): Promise<boolean> {
  for (let i = 0; i < 20; i++) {
    const text = await readFile(join(dir, 'postmaster.pid'), 'utf8').catch(() => '');
    const pid = Number(text.split('\n')[0]);
    if (pid > 0) {
      try {
        process.kill(pid, 0);
        return true;
      } catch (e) {
        return (e as NodeJS.ErrnoException).code === 'EPERM';
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

function asUser(osUser: string | undefined, cmd: string, args: string[]): [string, string[]] {
  return osUser ? ['runuser', ['-u', osUser, '--', cmd, ...args]] : [cmd, args];
}

export async function chownTree(dir: string, osUser: string): Promise<void> {
  await execFileP('chown', ['-R', `${osUser}:${osUser}`, dir]);
}

/**
 * The server options recover --start uses: lc_messages=C so that the log lines it follows are
 * English, and log_min_messages=warning (the default) so that a production setting of error or
 * fatal does not hide the LOG lines that say where recovery stands.
 */
export function recoveryServerOptions(port: number): string {
  return `-p ${port} -c logging_collector=off -c log_destination=stderr -c unix_socket_directories=/tmp -c lc_messages=C -c log_min_messages=warning`;
}

/**
 * What the recovered server may inherit. Anything else stays out: recover's environment holds
 * storage credentials (AWS_SECRET_ACCESS_KEY, …), PGPASSWORD, DBCRATE_* settings, the
 * passphrase, and any superuser of the recovered server reads the postmaster's environment
 * (COPY … FROM PROGRAM 'env'). restore_command asks recover over its socket and needs none.
 */
const SERVER_ENV =
  /^(PATH|HOME|USER|LOGNAME|SHELL|LANG|LANGUAGE|LC_[A-Z]+|TZ|TZDIR|TMPDIR|PGTZ|PG_OOM_ADJUST_FILE|PG_OOM_ADJUST_VALUE)$/;

/** The environment the recovered server gets: an allowlist, and never the variables named (the passphrase's, say). */
export function serverEnvironment(drop: string[] = [], opts: { all?: boolean } = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if ((opts.all || SERVER_ENV.test(k)) && v !== undefined) env[k] = v;
  for (const k of drop) delete env[k];
  return env;
}

function failure(message: string, logFile: string, tail: string[]): DbcrateError {
  return new DbcrateError(ErrorCodes.RECOVERY_FAILED, message, {
    hint: `the server log is ${logFile}${tail.length ? `; its last lines:\n${tail.slice(-10).join('\n')}` : ''}`,
  });
}

/**
 * Start PostgreSQL on the recovered directory and follow its log until recovery has
 * stopped at the target (promoted, paused or shut down) or failed.
 */
export async function startRecovery(opts: {
  dir: string;
  binDir: string;
  port: number;
  action: RecoveryAction | 'end';
  osUser?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
  /** No new log line and no replay progress for this long while a FATAL was logged: give up (default 300 s). */
  stallMs?: number;
  /** Environment variables the server must not inherit (e.g. the passphrase's). */
  dropEnv?: string[];
  /** Inherit the whole environment (but dropEnv): a server that archives (recover --archive) may need it for archive_command. */
  fullEnvironment?: boolean;
  onProgress?: (walFilesRestored: number, segmentsRestored: number) => void;
}): Promise<RecoveryOutcome> {
  const logDir = join(opts.dir, 'log');
  await mkdir(logDir, { recursive: true, mode: 0o700 });
  const logFile = join(logDir, 'dbcrate-recover.log');
  await writeFile(logFile, '', { mode: 0o600 });
  if (opts.osUser) await chownTree(opts.dir, opts.osUser);
  const [cmd, args] = asUser(opts.osUser, join(opts.binDir, 'pg_ctl'), [
    '-D',
    opts.dir,
    '-l',
    logFile,
    '-o',
    recoveryServerOptions(opts.port),
    '-W',
    'start',
  ]);
  await new Promise<void>((res, rej) => {
    const p = spawn(cmd, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: serverEnvironment(opts.dropEnv, { all: opts.fullEnvironment }),
    });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', rej);
    p.on('close', (code) =>
      code === 0
        ? res()
        : rej(new DbcrateError(ErrorCodes.RECOVERY_FAILED, `pg_ctl start failed: ${err.trim()}`)),
    );
  });
  const log = new LogFollower(logFile);
  const reader = new RecoveryLogReader();
  const deadline = Date.now() + (opts.timeoutMs ?? 24 * 3600_000);
  const stallMs = opts.stallMs ?? 300_000;
  let lastChange = Date.now();
  try {
    for (;;) {
      const more = await log.read();
      if (more) {
        reader.feed(more);
        lastChange = Date.now();
      }
      const r = reader.state();
      opts.onProgress?.(r.outcome.walFilesRestored, reader.segmentsRestored);
      if (r.failed) throw failure(`recovery failed: ${r.failed}`, logFile, reader.tail);
      const done =
        (opts.action === 'pause' && r.paused) ||
        (opts.action === 'shutdown' && r.shutdown && r.exited) ||
        ((opts.action === 'promote' || opts.action === 'end') && r.promoted);
      if (done) {
        const state = r.promoted ? 'promoted' : r.paused ? 'paused' : 'shut down';
        await removeTree(join(opts.dir, PREFETCH_DIR)).catch(() => undefined);
        return { ...r.outcome, state, logFile };
      }
      // A server that dies without logging a shutdown (a configuration error, say) must not be waited for.
      if (!(await postmasterAlive(opts.dir))) {
        reader.feed(await log.read());
        reader.end();
        const again = reader.state();
        if (!again.promoted && !again.paused && !again.shutdown) {
          throw failure(`the server stopped: ${again.lastFatal ?? 'no reason logged'}`, logFile, reader.tail);
        }
        continue;
      }
      // Alive but stuck after a FATAL (nothing logged, nothing replayed): say so now, not at the deadline.
      if (r.lastFatal && Date.now() - lastChange > stallMs) {
        throw failure(
          `recovery made no progress for ${Math.round(stallMs / 1000)} s after: ${r.lastFatal}`,
          logFile,
          reader.tail,
        );
      }
      if (opts.signal?.aborted) {
        throw new DbcrateError(
          ErrorCodes.INTERRUPTED,
          `interrupted; the server on ${opts.dir} is left running, but recovery stops at the next WAL file it needs (pg_ctl -D ${opts.dir} stop)`,
        );
      }
      if (Date.now() > deadline) {
        throw failure('recovery did not reach its target in time', logFile, reader.tail);
      }
      await new Promise((r2) => setTimeout(r2, 250));
    }
  } finally {
    await log.close();
  }
}
