/**
 * The wal-push ⇄ agent protocol over a local Unix socket (docs/format.md, "Agent protocol").
 * This file imports only Node built-ins: `bin/dbcrate.js` loads it alone so that an
 * archive_command call served by the agent costs a bare Node start, not the whole CLI.
 *
 * The contract is docs/format.md, "Agent protocol" (version AGENT_PROTOCOL_VERSION).
 * Request, one line: {"v":1,"op":"push","path":…,"nonce":<32 hex>,"expect":{…}}
 * Reply, two lines:  <JSON reply>\n<hex HMAC-SHA256(secret, nonce + "\n" + JSON reply)>\n
 * The secret is in `<socket>.secret` (0600, the agent's user). A listener that does not
 * know it (a fake agent on the socket path) cannot produce an acknowledgement.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { lstatSync, mkdirSync, readFileSync, realpathSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

/**
 * What the archive_command call was configured with, as given (the agent resolves it the
 * way `wal-push` would and refuses a push whose destination, database id or recipients
 * differ from its own). Raw sources, not resolved values: resolving needs the YAML parser
 * and OpenPGP, which the fast path and the native client do not load.
 */
export interface PushExpect {
  /** Absolute path of --config / DBCRATE_CONFIG. */
  config?: string;
  to?: string;
  recipient?: string[];
  databaseId?: string;
  /** --signing-key: the agent must sign with the same key. */
  signingKey?: string;
  /** DBCRATE_TO, DBCRATE_RECIPIENT, DBCRATE_DATABASE_ID, DBCRATE_SIGNING_KEY of the caller, when set. */
  env?: Record<string, string>;
  /** The caller's working directory (relative key paths are resolved against it). */
  cwd?: string;
}

/**
 * The version of this protocol (docs/format.md). A request without `v` is version 1
 * (clients before the field). An agent refuses a version it does not speak, with an
 * authenticated answer, so an old agent never acknowledges a request it misreads.
 */
export const AGENT_PROTOCOL_VERSION = 1;

export interface PushRequest {
  v?: number;
  op: 'push' | 'ping';
  /** Absolute path of the WAL file (archive_command's %p resolved against the data directory). */
  path: string;
  /** Random, per request; the reply's MAC covers it, so an old reply cannot be replayed. */
  nonce?: string;
  expect?: PushExpect;
}

export type AgentReply =
  | { ok: true; outcome: string; key?: string }
  | { ok: false; code: string; message: string; hint?: string; exitCode: number };

export const AGENT_SOCKET_NAME = 'dbcrate-agent.sock';
export const AGENT_SECRET_SUFFIX = '.secret';
/** Environment variable: how long a client waits for the agent's answer (ms). */
export const AGENT_TIMEOUT_ENV = 'DBCRATE_AGENT_TIMEOUT_MS';
export const AGENT_DEFAULT_TIMEOUT_MS = 600_000;
const SOCKET_PATH_MAX = 100;
/** An answer is a short JSON line and a MAC. */
const REPLY_MAX = 65_535;

/** A refusal of the agent channel: exit 4, E_AGENT (PostgreSQL keeps the file and retries). */
export class AgentError extends Error {
  readonly code = 'E_AGENT';
  readonly exitCode = 4;
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
    this.name = 'AgentError';
  }
}

function uid(): number {
  return process.geteuid?.() ?? process.getuid?.() ?? -1;
}

/**
 * Default socket: `<pgdata>/pg_wal/dbcrate-agent.sock`. archive_command runs in the data
 * directory, so every caller (this CLI, the native client) finds it without configuration;
 * pg_wal is private to the cluster's OS user (0700); and pg_basebackup never copies what
 * is inside it. Paths too long for a Unix socket fall back to a private directory of this
 * user, `$TMPDIR/dbcrate-agent-<uid>/` (0700, checked), and a name derived from the data
 * directory. native/dbcrate-wal-push.c computes the same path.
 */
export function agentSocketPath(pgdata: string): string {
  let real = resolve(pgdata);
  try {
    real = realpathSync(real);
  } catch {
    // a data directory that does not exist yet still gets a stable name
  }
  const inPgWal = join(real, 'pg_wal', AGENT_SOCKET_NAME);
  if (Buffer.byteLength(inPgWal) < SOCKET_PATH_MAX) return inPgWal;
  const tag = createHash('sha256').update(real).digest('hex').slice(0, 16);
  return join(privateTmpDir(), `${tag}.sock`);
}

export function privateTmpDir(): string {
  return join(tmpdir(), `dbcrate-agent-${uid()}`);
}

export function agentSecretPath(socketPath: string): string {
  return socketPath + AGENT_SECRET_SUFFIX;
}

/**
 * The directory holding the socket must be one that only this user (or root) can change:
 * owned by us or root, a real directory (no symlink), writable by nobody else.
 * Throws AgentError naming what is wrong. With `create`, makes the private temp directory.
 */
export function checkSocketDir(socketPath: string, opts: { create?: boolean } = {}): void {
  const dir = dirname(resolve(socketPath));
  const isPrivateTmp = dir === privateTmpDir();
  if (opts.create && isPrivateTmp) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  let st;
  try {
    st = lstatSync(dir);
  } catch (e) {
    throw new AgentError(
      `cannot use the agent socket directory ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
  const me = uid();
  const why = !st.isDirectory()
    ? 'it is not a directory (a symlink?)'
    : st.uid !== me && st.uid !== 0
      ? `it is owned by uid ${st.uid}, not by this user (uid ${me}) or root`
      : (st.mode & 0o022) !== 0
        ? `it is writable by other users (mode ${(st.mode & 0o7777).toString(8)})`
        : isPrivateTmp && (st.uid !== me || (st.mode & 0o077) !== 0)
          ? `it must be owned by uid ${me} with mode 700 (mode ${(st.mode & 0o7777).toString(8)}, uid ${st.uid})`
          : undefined;
  if (why) {
    throw new AgentError(
      `refusing the agent socket directory ${dir}: ${why}`,
      'another user could put a fake agent there; fix its owner and mode, or give the agent and wal-push a --socket in a directory only the cluster owner can write',
    );
  }
}

/**
 * Before talking to a socket: it must be a socket owned by this user, in a directory
 * only this user (or root) controls. Returns false when nothing is there (no agent).
 */
export function checkSocketTrust(socketPath: string): boolean {
  let st;
  try {
    st = lstatSync(socketPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new AgentError(`cannot check the agent socket ${socketPath}: ${(e as NodeJS.ErrnoException).code}`);
  }
  checkSocketDir(socketPath);
  if (!st.isSocket()) throw new AgentError(`refusing ${socketPath}: it is not a socket`);
  if (st.uid !== uid()) {
    throw new AgentError(
      `refusing the agent socket ${socketPath}: it is owned by uid ${st.uid}, not by this user (uid ${uid()})`,
      'the agent must run as the OS user that runs PostgreSQL (and archive_command)',
    );
  }
  return true;
}

/** Read the shared secret; the file must be ours and private. */
export function readAgentSecret(socketPath: string): string {
  const path = agentSecretPath(socketPath);
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    throw new AgentError(
      `the agent at ${socketPath} has no secret file ${path} (${(e as NodeJS.ErrnoException).code}); refusing to trust its answers`,
      'an agent of this version writes it before it listens; restart the agent',
    );
  }
  if (!st.isFile() || st.uid !== uid() || (st.mode & 0o077) !== 0) {
    throw new AgentError(
      `refusing the agent secret ${path}: it must be a regular file owned by uid ${uid()} with mode 600`,
    );
  }
  const text = readFileSync(path, 'utf8').trim();
  if (!/^[0-9a-f]{64}$/.test(text)) throw new AgentError(`the agent secret ${path} is malformed`);
  return text;
}

export function newAgentSecret(): string {
  return randomBytes(32).toString('hex');
}

export function replyMac(secret: string, nonce: string, replyLine: string): string {
  return createHmac('sha256', secret)
    .update(nonce + '\n' + replyLine)
    .digest('hex');
}

export function agentTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env[AGENT_TIMEOUT_ENV]);
  return Number.isFinite(v) && v > 0 ? v : AGENT_DEFAULT_TIMEOUT_MS;
}

function exchange(
  socketPath: string,
  line: string,
  lines: number,
  timeoutMs: number,
): Promise<string[] | undefined> {
  return new Promise((resolvePromise, reject) => {
    const sock = connect(socketPath);
    let buf = '';
    let connected = false;
    let done = false;
    const finish = (f: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      f();
    };
    const timer = setTimeout(
      () =>
        finish(() =>
          reject(
            new AgentError(
              `the dbcrate agent at ${socketPath} did not answer within ${timeoutMs / 1000} s`,
              `PostgreSQL keeps the WAL file and retries; check the agent (${AGENT_TIMEOUT_ENV} sets the wait)`,
            ),
          ),
        ),
      timeoutMs,
    );
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      connected = true;
      sock.write(line + '\n');
    });
    sock.on('data', (d: string) => {
      buf += d;
      const parts = buf.split('\n');
      if (parts.length > lines) finish(() => resolvePromise(parts.slice(0, lines)));
      // A listener that streams without end must not fill this process's memory until the
      // timeout (the native client has the same bound).
      else if (buf.length > REPLY_MAX)
        finish(() =>
          reject(new AgentError(`the agent at ${socketPath} sent an answer longer than 64 KiB; refusing it`)),
        );
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      if (!connected && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED'))
        finish(() => resolvePromise(undefined));
      else finish(() => reject(new AgentError(`cannot talk to the agent at ${socketPath}: ${e.message}`)));
    });
    sock.on('close', () => {
      // A complete first line without its MAC: the caller's check refuses it.
      const parts = buf.split('\n');
      if (parts.length > 1) {
        finish(() => resolvePromise([...parts, ...Array<string>(lines).fill('')].slice(0, lines)));
        return;
      }
      // An agent that dies mid-request gives no answer: that is a failure, never success.
      finish(() =>
        reject(
          new AgentError(
            `the dbcrate agent at ${socketPath} closed the connection without answering`,
            'PostgreSQL keeps the WAL file and retries',
          ),
        ),
      );
    });
  });
}

/** Is something answering on this socket? (Used by an agent before it takes the path over.) */
export async function pingAgent(socketPath: string, timeoutMs = 2000): Promise<boolean> {
  try {
    return (
      (await exchange(
        socketPath,
        JSON.stringify({ v: AGENT_PROTOCOL_VERSION, op: 'ping', path: '' }),
        1,
        timeoutMs,
      )) !== undefined
    );
  } catch {
    return true; // something is there and misbehaves: do not take its place silently
  }
}

/**
 * Ask the agent to make `path` durable. Resolves undefined when no agent listens
 * (the caller then pushes by itself); a reply with ok=false is the agent's error.
 * Throws AgentError when the socket or the answer cannot be trusted.
 */
export async function requestPush(
  socketPath: string,
  path: string,
  opts: { timeoutMs?: number; expect?: PushExpect } = {},
): Promise<AgentReply | undefined> {
  if (!checkSocketTrust(socketPath)) return undefined;
  const nonce = randomBytes(16).toString('hex');
  const req: PushRequest = { v: AGENT_PROTOCOL_VERSION, op: 'push', path, nonce, expect: opts.expect };
  const lines = await exchange(socketPath, JSON.stringify(req), 2, opts.timeoutMs ?? agentTimeoutMs());
  if (!lines) return undefined;
  const [replyLine, mac] = lines;
  // Read once something answered: a socket left by a dead agent is "no agent", not an error.
  const secret = readAgentSecret(socketPath);
  const want = Buffer.from(replyMac(secret, nonce, replyLine), 'hex');
  const got = Buffer.from(/^[0-9a-f]{64}$/.test(mac) ? mac : '', 'hex');
  if (got.length !== want.length || !timingSafeEqual(got, want)) {
    throw new AgentError(
      `the process listening on ${socketPath} did not authenticate its answer; refusing it`,
      'something other than the dbcrate agent listens there (or an agent of another version); nothing was acknowledged',
    );
  }
  let parsed: AgentReply;
  try {
    parsed = JSON.parse(replyLine) as AgentReply;
  } catch {
    throw new AgentError(`the agent at ${socketPath} sent a malformed answer`);
  }
  // Success is only ever the outcome of a push (a ping's "alive" is not an archived file).
  if (parsed.ok && parsed.outcome !== 'archived' && parsed.outcome !== 'already-archived')
    throw new AgentError(
      `the agent at ${socketPath} answered "${String(parsed.outcome)}", not an archived file`,
    );
  return parsed;
}

const EXPECT_ENV = ['DBCRATE_TO', 'DBCRATE_RECIPIENT', 'DBCRATE_DATABASE_ID', 'DBCRATE_SIGNING_KEY'];

/** Collect the raw settings a wal-push call was given (flags already parsed by the caller). */
export function pushExpect(
  flags: { config?: string; to?: string; recipient?: string[]; databaseId?: string; signingKey?: string },
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): PushExpect {
  const e: PushExpect = { cwd };
  const config = flags.config ?? env.DBCRATE_CONFIG;
  if (config) e.config = resolve(cwd, config);
  if (flags.to) e.to = flags.to;
  if (flags.recipient?.length) e.recipient = flags.recipient;
  if (flags.databaseId) e.databaseId = flags.databaseId;
  if (flags.signingKey) e.signingKey = flags.signingKey;
  const vars: Record<string, string> = {};
  for (const k of EXPECT_ENV) if (env[k]) vars[k] = env[k]!;
  if (Object.keys(vars).length) e.env = vars;
  return e;
}
