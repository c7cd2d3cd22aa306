/**
 * A throwaway OpenSSH server (/usr/sbin/sshd -D -e) on 127.0.0.1:<free port> for SFTP tests,
 * with its own host key, a user key pair and its config in a temporary directory.
 *
 *   let sshd: SshdHarness;
 *   beforeAll(async () => { sshd = await startSshd(); });
 *   afterAll(async () => { await sshd?.stop(); });
 *   const url = sshd.url('backups'); // sftp://root@127.0.0.1:<port>/<root>/backups?known_hosts=…&identity=…
 *
 * Key authentication logs in as the current user (root on the test machines). With
 * `passwordUser: true` the harness also creates a throwaway OS user with a random password
 * (useradd + chpasswd, removed again by stop()); that needs root.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports';
import { pidAlive, staleHarnessDirs } from './stale-dirs';

const execFileP = promisify(execFile);

const SSHD = '/usr/sbin/sshd';
const PREFIX = 'dbcrate-sshd-';
const OWNER_FILE = 'owner.pid';
const USER_FILE = 'os-user';

export interface SshdOptions {
  /** Also create an OS user with a password (needs root); see `password`. */
  passwordUser?: boolean;
}

export interface SshdHarness {
  host: string;
  port: number;
  /** The key-auth login (the current OS user). */
  user: string;
  /** Private key accepted for `user` (no passphrase). */
  identityFile: string;
  /** "SHA256:…" of the server's host key, as `ssh-keygen -lf` prints it. */
  hostKeyFingerprint: string;
  /** known_hosts holding this server's key under [127.0.0.1]:port. */
  knownHostsFile: string;
  /** Directory destinations live under (empty at start). */
  root: string;
  /** The harness directory (config, keys, log); removed by stop(). */
  baseDir: string;
  logFile: string;
  /** With passwordUser: that user's name and password (its home is `root`). */
  passwordUser?: { name: string; password: string };
  /**
   * sftp:// URL of `sub` under root, for `user` with identity= and known_hosts= set.
   * `query` adds or replaces parameters; a value of null removes one.
   */
  url(sub?: string, query?: Record<string, string | null>): string;
  /** Stop sshd and its session processes, remove the OS user and the directory; safe to call twice. */
  stop(): Promise<void>;
}

interface Live {
  pid?: number;
  baseDir: string;
  osUser?: string;
}
const live = new Map<string, Live>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const l of live.values()) cleanupSync(l);
  });
}

/** Session processes sshd forked for connections (its children, found through /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name), ...childrenOf(Number(name)));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function killTree(pid: number, signal: NodeJS.Signals): void {
  for (const p of [...childrenOf(pid), pid]) {
    try {
      process.kill(p, signal);
    } catch {
      // already gone
    }
  }
}

function cleanupSync(l: Live): void {
  if (l.pid) killTree(l.pid, 'SIGKILL');
  if (l.osUser) {
    try {
      execFileSync('userdel', ['-f', l.osUser], { stdio: 'ignore' });
    } catch {
      // already removed
    }
  }
  fs.rmSync(l.baseDir, { recursive: true, force: true });
}

/** Servers and users left behind by a test process that died (SIGKILL, crash). */
export function reapStaleSshd(tmp = os.tmpdir()): number {
  const stale = staleHarnessDirs(PREFIX, OWNER_FILE, tmp);
  for (const baseDir of stale) {
    const read = (f: string): string | undefined => {
      try {
        return fs.readFileSync(path.join(baseDir, f), 'utf8').trim() || undefined;
      } catch {
        return undefined;
      }
    };
    const pid = Number(read('sshd.pid') ?? 0) || undefined;
    // Only kill what is still our sshd, not a recycled pid.
    const ours = pid && pidAlive(pid) && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(baseDir);
    cleanupSync({ pid: ours ? pid : undefined, baseDir, osUser: read(USER_FILE) });
  }
  return stale.length;
}

function fingerprintOfPub(pubLine: string): string {
  const blob = Buffer.from(pubLine.trim().split(/\s+/)[1], 'base64');
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

async function keygen(file: string, comment: string): Promise<void> {
  await execFileP('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file]);
}

export async function startSshd(opts: SshdOptions = {}): Promise<SshdHarness> {
  if (!fs.existsSync(SSHD)) throw new Error(`${SSHD} is missing: apt-get install openssh-server`);
  reapStaleSshd();
  installExitHook();
  const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), PREFIX));
  fs.chmodSync(baseDir, 0o755);
  fs.writeFileSync(path.join(baseDir, OWNER_FILE), String(process.pid));
  const state: Live = { baseDir };
  live.set(baseDir, state);
  const root = path.join(baseDir, 'root');
  fs.mkdirSync(root, { mode: 0o755 });
  const logFile = path.join(baseDir, 'sshd.log');
  const hostKey = path.join(baseDir, 'ssh_host_ed25519_key');
  const identityFile = path.join(baseDir, 'id_ed25519');
  const authorizedKeys = path.join(baseDir, 'authorized_keys');
  const knownHostsFile = path.join(baseDir, 'known_hosts');
  const configFile = path.join(baseDir, 'sshd_config');
  const user = os.userInfo().username;
  let child: ChildProcess | undefined;

  const stop = async (): Promise<void> => {
    if (!live.has(baseDir)) return;
    live.delete(baseDir);
    if (child?.pid && child.exitCode === null) {
      const exited = new Promise<void>((r) => child!.once('exit', () => r()));
      killTree(child.pid, 'SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 3000)))]);
      clearTimeout(timer);
      if (child.exitCode === null) killTree(child.pid, 'SIGKILL');
    }
    state.pid = undefined;
    cleanupSync(state);
  };

  try {
    await Promise.all([keygen(hostKey, 'dbcrate-test-host'), keygen(identityFile, 'dbcrate-test-user')]);
    fs.copyFileSync(`${identityFile}.pub`, authorizedKeys);
    const hostPub = fs.readFileSync(`${hostKey}.pub`, 'utf8');

    let passwordUser: SshdHarness['passwordUser'];
    if (opts.passwordUser) {
      if (process.getuid?.() !== 0) throw new Error('startSshd({ passwordUser: true }) needs root (useradd)');
      const name = `dbct${randomBytes(5).toString('hex')}`;
      const password = `pw-${randomBytes(12).toString('base64url')}`;
      await execFileP('useradd', ['-M', '-d', root, '-s', '/bin/sh', name]);
      state.osUser = name;
      fs.writeFileSync(path.join(baseDir, USER_FILE), name);
      await new Promise<void>((resolve, reject) => {
        const p = execFile('chpasswd', (err) => (err ? reject(err) : resolve()));
        p.stdin?.end(`${name}:${password}\n`);
      });
      const { uid, gid } = uidOf(name);
      fs.chownSync(root, uid, gid);
      passwordUser = { name, password };
    }

    // privilege separation directory sshd insists on
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });

    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await freePort();
      fs.writeFileSync(
        configFile,
        [
          `Port ${port}`,
          'ListenAddress 127.0.0.1',
          `HostKey ${hostKey}`,
          `PidFile ${path.join(baseDir, 'sshd.pid')}`,
          `AuthorizedKeysFile ${authorizedKeys}`,
          'PubkeyAuthentication yes',
          `PasswordAuthentication ${opts.passwordUser ? 'yes' : 'no'}`,
          'KbdInteractiveAuthentication no',
          'PermitRootLogin prohibit-password',
          'UsePAM no',
          'StrictModes no',
          'UseDNS no',
          'MaxStartups 100',
          'MaxSessions 100',
          'LogLevel VERBOSE',
          'Subsystem sftp internal-sftp',
          '',
        ].join('\n'),
      );
      child = spawn(SSHD, ['-D', '-e', '-f', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
      state.pid = child.pid;
      const log = fs.createWriteStream(logFile, { flags: 'a' });
      child.stderr!.pipe(log);
      const ready = await new Promise<'ok' | string>((resolve) => {
        let text = '';
        const timer = setTimeout(() => resolve(`sshd did not start within 10 s:\n${text}`), 10_000);
        child!.stderr!.on('data', (d: Buffer) => {
          text += d.toString();
          if (text.includes(`Server listening on 127.0.0.1 port ${port}`)) {
            clearTimeout(timer);
            resolve('ok');
          }
        });
        child!.once('exit', (code) => {
          clearTimeout(timer);
          resolve(`sshd exited with ${code}:\n${text}`);
        });
      });
      if (ready === 'ok') break;
      if (child.exitCode === null) killTree(child.pid!, 'SIGKILL');
      // Someone took the port between freePort() and bind(): try another.
      if (attempt >= 3 || !/Address already in use|Cannot bind/i.test(ready)) throw new Error(ready);
    }
    child.stderr!.resume();
    fs.writeFileSync(
      knownHostsFile,
      `[127.0.0.1]:${port} ${hostPub.trim().split(/\s+/).slice(0, 2).join(' ')}\n`,
    );

    return {
      host: '127.0.0.1',
      port,
      user,
      identityFile,
      hostKeyFingerprint: fingerprintOfPub(hostPub),
      knownHostsFile,
      root,
      baseDir,
      logFile,
      passwordUser,
      url(sub = '', query = {}) {
        const q: Record<string, string | null> = {
          known_hosts: knownHostsFile,
          identity: identityFile,
          ...query,
        };
        const qs = Object.entries(q)
          .filter((e): e is [string, string] => e[1] !== null)
          .map(([k, v]) => `${k}=${encodeURIComponent(v).replace(/%2F/g, '/').replace(/%3A/g, ':')}`)
          .join('&');
        const p = path.posix.join(root, sub.replace(/^\/+/, ''));
        return `sftp://${encodeURIComponent(user)}@127.0.0.1:${port}${p}${qs ? `?${qs}` : ''}`;
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

function uidOf(name: string): { uid: number; gid: number } {
  const line = fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${name}:`));
  if (!line) throw new Error(`user ${name} not found in /etc/passwd`);
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}
