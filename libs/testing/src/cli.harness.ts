import { spawn } from 'node:child_process';
import { join } from 'node:path';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const REPO = join(__dirname, '..', '..', '..');
export const CLI_ENTRY = join(REPO, 'bin', 'dbcrate.js');

/** Everything any CLI run printed in this test process, for "no secret in any output" checks. */
export const transcript: string[] = [];

/**
 * Run the built `dbcrate` command as a user would (node bin/dbcrate.js …), capturing
 * stdout and stderr. Progress is JSON lines because stderr is not a TTY.
 */
export function runCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; onSpawn?: (pid: number) => void; input?: string } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_ENTRY, ...args], {
      env: { ...process.env, DBCRATE_LOG_LEVEL: 'info', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 240_000);
    if (child.pid) opts.onSpawn?.(child.pid);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      transcript.push(`${stdout}\n${stderr}`);
      resolve({ code, signal, stdout, stderr });
    });
  });
}
