/**
 * The wal-push ⇄ agent protocol over a local Unix socket: one JSON line each way.
 * This file imports only Node built-ins: `bin/dbcrate.js` loads it alone so that an
 * archive_command call served by the agent costs a bare Node start, not the whole CLI.
 */
import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export interface PushRequest {
  op: 'push';
  /** Absolute path of the WAL file (archive_command's %p resolved against the data directory). */
  path: string;
}

export type AgentReply =
  | { ok: true; outcome: string; key?: string }
  | { ok: false; code: string; message: string; hint?: string; exitCode: number };

export const AGENT_SOCKET_NAME = 'dbcrate-agent.sock';

/**
 * Default socket: `<pgdata>/pg_wal/dbcrate-agent.sock`. archive_command runs in the data
 * directory, so every caller (this CLI, the native client) finds it without configuration;
 * and pg_basebackup never copies what is inside pg_wal. Paths too long for a Unix socket
 * (108 bytes) fall back to a name in the temp dir derived from the data directory.
 */
export function agentSocketPath(pgdata: string): string {
  let real = resolve(pgdata);
  try {
    real = realpathSync(real);
  } catch {
    // a data directory that does not exist yet still gets a stable name
  }
  const inPgWal = join(real, 'pg_wal', AGENT_SOCKET_NAME);
  if (Buffer.byteLength(inPgWal) < 100) return inPgWal;
  const tag = createHash('sha256').update(real).digest('hex').slice(0, 16);
  return join(tmpdir(), `dbcrate-agent-${tag}.sock`);
}

/**
 * Ask the agent to make `path` durable. Resolves undefined when no agent listens
 * (the caller then pushes by itself); a reply with ok=false is the agent's error.
 */
export function requestPush(
  socketPath: string,
  path: string,
  timeoutMs = 600_000,
): Promise<AgentReply | undefined> {
  return new Promise((resolvePromise, reject) => {
    const sock = connect(socketPath);
    let buf = '';
    let connected = false;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`the dbcrate agent at ${socketPath} did not answer within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
      sock.write(JSON.stringify({ op: 'push', path } satisfies PushRequest) + '\n');
    });
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.end();
      try {
        resolvePromise(JSON.parse(buf.slice(0, nl)) as AgentReply);
      } catch (e) {
        reject(e as Error);
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!connected && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')) resolvePromise(undefined);
      else reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      // An agent that dies mid-request gives no answer: that is a failure, never success.
      if (connected && !buf.includes('\n'))
        reject(new Error(`the dbcrate agent at ${socketPath} closed the connection without answering`));
    });
  });
}
