import { existsSync, watch, type FSWatcher } from 'node:fs';
import { chmod, readdir, readFile, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Piscina } from 'piscina';
import { DbcrateError, ErrorCodes, logger, toDbcrateError } from '@dbcrate/core';
import type { Storage } from '@dbcrate/storage';
import {
  AGENT_PROTOCOL_VERSION,
  agentSecretPath,
  checkSocketDir,
  newAgentSecret,
  pingAgent,
  replyMac,
  type AgentReply,
  type PushExpect,
  type PushRequest,
} from './agent.protocol';
import {
  sealWal,
  WalArchiver,
  type PushResult,
  type WalArchiverOptions,
  type WalSealOptions,
} from './wal.archive';
import { parseWalFileName } from './wal.names';
import type { SealTask, SealTaskResult } from './wal.seal.worker';
import { fromErrorData } from './wal.segment';

export interface WalAgentOptions {
  pgdata: string;
  socketPath: string;
  storage: Storage;
  databaseId: string;
  systemIdentifier: string;
  seal: WalSealOptions;
  /** Segments pushed at once (and worker threads compressing/encrypting). */
  parallel?: number;
  /** How often pg_wal/archive_status is rescanned besides the watcher's events. */
  scanIntervalMs?: number;
  /**
   * Check the settings a push was configured with against this agent's own; throw (a
   * DbcrateError) to refuse the push. Without it, pushes that carry settings are refused.
   */
  verifyExpect?: (expect: PushExpect) => Promise<void>;
  /** Tests: passed to the archiver (barriers, or a hang inside a put). */
  hooks?: WalArchiverOptions['hooks'];
}

interface Entry {
  promise: Promise<PushResult>;
  settled: boolean;
  /** performance.now() of the failure: a wall clock set back would delay the retry for as long. */
  failedAt?: number;
  /** Identity of the file that was pushed: a recycled name with new content must be pushed again. */
  fileId: string;
}

async function fileId(path: string): Promise<string> {
  const s = await stat(path);
  return `${s.ino}:${s.size}:${s.mtimeMs}`;
}

/**
 * The resident WAL agent. PostgreSQL's archiver hands one segment at a time to
 * archive_command; the agent watches archive_status/*.ready and pushes every ready
 * segment ahead, several at once, so that the archive_command call for a segment
 * usually finds it already durable and returns at once (WAL-G's and pgBackRest's
 * async archiving do the same). It only ever answers "done" for a file whose upload
 * completed; PostgreSQL still decides when a segment may be recycled.
 */
export class WalAgent {
  private readonly entries = new Map<string, Entry>();
  private readonly archiver: WalArchiver;
  private readonly parallel: number;
  private readonly statusDir: string;
  private readonly walDir: string;
  private pool?: Piscina;
  private readonly workerFile?: string;
  private server?: Server;
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private scanning = false;
  private rescan = false;
  private stopped = false;
  private started = false;
  private secret = '';
  private socketIno?: number;

  constructor(private readonly opts: WalAgentOptions) {
    this.parallel = Math.max(1, opts.parallel ?? 2);
    this.walDir = join(resolve(opts.pgdata), 'pg_wal');
    this.statusDir = join(this.walDir, 'archive_status');
    const worker = join(__dirname, 'wal.seal.worker.js');
    // Built code seals in worker threads (started by start(), not here: an agent that is made
    // but never started, or fails to start, leaves no threads behind); from TypeScript sources
    // (tests) on the main thread.
    this.workerFile = existsSync(worker) ? worker : undefined;
    // A segment that is the only one being sealed gets libzstd's threads on the idle cores:
    // its archive_command waits for it. With several in flight the cores are busy already.
    let sealing = 0;
    const idleThreads = availableParallelism() >= 2 ? 2 : 0;
    this.archiver = new WalArchiver({
      storage: opts.storage,
      databaseId: opts.databaseId,
      systemIdentifier: opts.systemIdentifier,
      seal: (plain, walFile) => sealWal(plain, opts.seal, walFile),
      hooks: opts.hooks,
      sealSegment: this.workerFile
        ? async (path, walFile) => {
            const pool = this.pool;
            if (!pool) throw new DbcrateError(ErrorCodes.INTERNAL, 'the WAL agent is not started');
            const task: SealTask = {
              path: resolve(opts.pgdata, path),
              walFile,
              systemIdentifier: opts.systemIdentifier,
              opts: sealing === 0 ? { ...opts.seal, zstdThreads: idleThreads } : opts.seal,
            };
            sealing++;
            try {
              const r = (await pool.run(task)) as SealTaskResult;
              if ('error' in r) throw fromErrorData(r.error);
              return r;
            } finally {
              sealing--;
            }
          }
        : undefined,
    });
  }

  /**
   * Every worker thread has loaded its modules before the agent takes its first segment
   * (its first archive_command would otherwise wait for that). Bounded: a slow start only
   * means the first segments are slower.
   */
  private async warmUp(): Promise<void> {
    const seen = new Set<number>();
    const until = Date.now() + 10_000;
    while (this.pool && seen.size < this.parallel && Date.now() < until) {
      const round = Promise.all(
        Array.from({ length: this.parallel }, () => this.pool!.run({ warm: true }) as Promise<number>),
      );
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<undefined>((r) => {
        timer = setTimeout(() => r(undefined), Math.max(0, until - Date.now()));
      });
      // A worker that cannot load fails here, at start, with its own error.
      const ids = await Promise.race([round, late]).finally(() => clearTimeout(timer));
      if (!ids) break;
      for (const id of ids) seen.add(id);
    }
  }

  async start(): Promise<void> {
    if (!existsSync(this.statusDir)) {
      throw new DbcrateError(ErrorCodes.CONFIG, `${this.statusDir} does not exist`, {
        hint: '--pgdata must be the data directory of the PostgreSQL cluster whose WAL this agent archives',
      });
    }
    // once per agent: a second start would share (and on failure tear down) the first one's threads
    if (this.started || this.stopped) {
      throw new DbcrateError(ErrorCodes.INTERNAL, 'a WAL agent is started once; make a new one');
    }
    this.started = true;
    if (this.workerFile) {
      // Loaded here: only the agent needs worker threads, not every CLI start.
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- synchronous lazy load
      const { Piscina: Pool } = require('piscina') as typeof import('piscina');
      // one task per thread at a time: a thread reuses its buffers from one segment to the next
      this.pool = new Pool({
        filename: this.workerFile,
        minThreads: this.parallel,
        maxThreads: this.parallel,
        concurrentTasksPerWorker: 1,
      });
    }
    try {
      await this.warmUp();
      await this.listen();
      // stop() ran while this was starting: it found nothing to close yet
      if (this.stopped)
        throw new DbcrateError(ErrorCodes.INTERRUPTED, 'the WAL agent was stopped while starting');
    } catch (e) {
      await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
      await this.pool?.destroy();
      this.pool = undefined;
      await this.removeOwnFiles();
      throw e;
    }
    this.watcher = watch(this.statusDir, () => this.scanSoon());
    this.watcher.on('error', (e) =>
      logger().warn({ err: e.message }, 'archive_status watcher failed; polling only'),
    );
    this.timer = setInterval(() => this.scanSoon(), this.opts.scanIntervalMs ?? 1000);
    this.scanSoon();
    logger().info(
      { pgdata: this.opts.pgdata, socket: this.opts.socketPath, parallel: this.parallel },
      'agent started',
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    await Promise.allSettled([...this.entries.values()].map((e) => e.promise));
    await this.pool?.destroy();
    this.pool = undefined;
    await this.removeOwnFiles();
  }

  private async listen(): Promise<void> {
    const path = this.opts.socketPath;
    try {
      checkSocketDir(path, { create: true });
    } catch (e) {
      throw new DbcrateError(ErrorCodes.CONFIG, (e as Error).message, {
        hint: (e as { hint?: string }).hint,
      });
    }
    if (existsSync(path)) {
      // A live agent answers; a socket file left by a killed one does not.
      if (await pingAgent(path)) {
        throw new DbcrateError(ErrorCodes.CONFIG, `an agent is already listening on ${path}`, {
          hint: 'run one agent per data directory (or give this one another --socket)',
        });
      }
      await unlink(path);
    }
    // The secret authenticates our answers (agent.protocol.ts). Its file is written only once
    // the path is ours: an agent whose listen fails (another one took the path meanwhile)
    // must not replace the running agent's secret, or every answer of that one is refused.
    // A client in between reads no or an old secret and fails closed; PostgreSQL retries.
    this.secret = newAgentSecret();
    this.server = createServer((sock) => this.serve(sock));
    await new Promise<void>((res, rej) => {
      this.server!.once('error', rej);
      this.server!.listen(path, () => res());
    });
    await chmod(path, 0o600);
    this.socketIno = (await stat(path)).ino;
    const secretPath = agentSecretPath(path);
    const tmp = `${secretPath}.${process.pid}.tmp`;
    await writeFile(tmp, this.secret + '\n', { mode: 0o600, flag: 'w' });
    await chmod(tmp, 0o600);
    await rename(tmp, secretPath);
  }

  /**
   * Remove the socket and secret only while they are ours: a successor's secret stays.
   * (libuv itself unlinks the socket path when the server closes.)
   */
  private async removeOwnFiles(): Promise<void> {
    const path = this.opts.socketPath;
    const ino = await stat(path).then(
      (s) => s.ino,
      () => undefined,
    );
    if (ino !== undefined && ino === this.socketIno) await unlink(path).catch(() => undefined);
    const secretPath = agentSecretPath(path);
    const text = await readFile(secretPath, 'utf8').catch(() => '');
    if (text.trim() === this.secret) await unlink(secretPath).catch(() => undefined);
  }

  private serve(sock: Socket): void {
    let buf = '';
    let nonce = '';
    let handled = false;
    const answer = (r: AgentReply): void => {
      const line = JSON.stringify(r);
      sock.end(`${line}\n${replyMac(this.secret, nonce, line)}\n`);
    };
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      if (handled) return;
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      handled = true;
      let req: PushRequest;
      try {
        req = JSON.parse(buf.slice(0, nl)) as PushRequest;
      } catch {
        answer(reply(new DbcrateError(ErrorCodes.USAGE, 'malformed request')));
        return;
      }
      if (!req || typeof req !== 'object') {
        answer(reply(new DbcrateError(ErrorCodes.USAGE, 'malformed request: not a JSON object')));
        return;
      }
      nonce = typeof req.nonce === 'string' ? req.nonce : '';
      if (req.v !== undefined && req.v !== AGENT_PROTOCOL_VERSION) {
        answer(
          reply(
            new DbcrateError(
              ErrorCodes.AGENT,
              `the agent speaks protocol version ${AGENT_PROTOCOL_VERSION}; this request is version ${String(req.v)}`,
              {
                hint: 'run the same dbcrate version for the agent and archive_command; PostgreSQL keeps the WAL file and retries',
              },
            ),
          ),
        );
        return;
      }
      if (req.op === 'ping') {
        answer({ ok: true, outcome: 'alive' });
        return;
      }
      // Only a push of a named file can be acknowledged: an "ok" to anything else would
      // read as success to a client that checks only `ok`.
      if (req.op !== 'push' || typeof req.path !== 'string' || !req.path) {
        answer(reply(new DbcrateError(ErrorCodes.USAGE, 'malformed request: a push names the WAL file')));
        return;
      }
      void this.checkExpect(req.expect)
        .then(() => this.checkPath(req.path))
        .then(() => this.pushOnRequest(req.path))
        .then(
          (r) => answer({ ok: true, outcome: r.outcome, key: r.key }),
          (e: unknown) => answer(reply(e)),
        );
    });
  }

  private async checkExpect(expect: PushExpect | undefined): Promise<void> {
    const given =
      expect &&
      (expect.config ||
        expect.to ||
        expect.recipient ||
        expect.databaseId ||
        expect.signingKey ||
        expect.env);
    if (!given) return; // a push that names no settings relies on the agent's
    if (!this.opts.verifyExpect) {
      throw new DbcrateError(ErrorCodes.CONFIG, 'this agent cannot check the settings wal-push was given', {
        hint: 'run the agent with `dbcrate agent`, or wal-push --no-agent',
      });
    }
    await this.opts.verifyExpect(expect);
  }

  /**
   * Only WAL of this agent's own data directory: a file elsewhere (another cluster's
   * pg_wal sharing the socket through --socket, any file this user can read) would be
   * archived and signed as this cluster's; a history file has no header that would
   * betray it. Real paths: pg_wal is often a symlink (initdb --waldir).
   */
  private async checkPath(path: string): Promise<void> {
    const [dir, mine] = await Promise.all([
      realpath(dirname(resolve(path))).catch(() => undefined),
      realpath(this.walDir).catch(() => this.walDir),
    ]);
    if (dir !== mine) {
      throw new DbcrateError(
        ErrorCodes.CONFIG,
        `${path} is not in ${this.walDir}: this agent archives only the WAL of its own data directory; nothing was archived`,
        {
          hint: 'archive_command must pass %p of the cluster this agent serves; push other files with `wal-push --no-agent`',
        },
      );
    }
  }

  /** archive_command asked for this file: answer from a push ahead when it is the same file, else push now. */
  private async pushOnRequest(path: string): Promise<PushResult> {
    const name = basename(path);
    const id = await fileId(path).catch(() => '');
    const e = this.entries.get(name);
    if (e && e.fileId === id) {
      try {
        return await e.promise;
      } catch {
        // the push ahead failed; try again now, in this request
      }
    }
    return this.startPush(name, path, id, true);
  }

  private startPush(name: string, path: string, id: string, requested = false): Promise<PushResult> {
    const entry: Entry = { promise: this.archiver.push(path), settled: false, fileId: id };
    this.entries.set(name, entry);
    entry.promise.then(
      () => {
        entry.settled = true;
        this.scanSoon();
      },
      (err: unknown) => {
        entry.settled = true;
        entry.failedAt = performance.now();
        if (!requested)
          logger().warn({ walFile: name, err: toDbcrateError(err).message }, 'push ahead failed; will retry');
        this.scanSoon();
      },
    );
    return entry.promise;
  }

  private scanSoon(): void {
    if (this.stopped) return;
    if (this.scanning) {
      this.rescan = true;
      return;
    }
    this.scanning = true;
    void this.scan()
      .catch((e: unknown) => logger().warn({ err: toDbcrateError(e).message }, 'archive_status scan failed'))
      .finally(() => {
        this.scanning = false;
        if (this.rescan) {
          this.rescan = false;
          this.scanSoon();
        }
      });
  }

  private async scan(): Promise<void> {
    const ready = (await readdir(this.statusDir))
      .filter((f) => f.endsWith('.ready'))
      .map((f) => f.slice(0, -'.ready'.length))
      .filter((n) => parseWalFileName(n) !== undefined);
    const readySet = new Set(ready);
    // Forget what PostgreSQL has marked done; keep in-flight pushes.
    for (const [name, e] of this.entries) if (e.settled && !readySet.has(name)) this.entries.delete(name);
    // History files first (PostgreSQL archives them first too), then oldest segments.
    ready.sort((a, b) => Number(b.endsWith('.history')) - Number(a.endsWith('.history')) || (a < b ? -1 : 1));
    let inflight = [...this.entries.values()].filter((e) => !e.settled).length;
    for (const name of ready) {
      if (inflight >= this.parallel || this.stopped) break;
      const e = this.entries.get(name);
      if (e && (!e.settled || !e.failedAt || performance.now() - e.failedAt < 5000)) continue;
      const path = join(this.walDir, name);
      const id = await fileId(path).catch(() => undefined);
      if (id === undefined) continue; // archived and recycled meanwhile
      this.startPush(name, path, id);
      inflight++;
    }
  }
}

function reply(e: unknown): AgentReply {
  const err = toDbcrateError(e);
  return { ok: false, code: err.code, message: err.message, hint: err.hint, exitCode: err.exitCode };
}
