import { readFile, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { DbcrateError, ErrorCodes, ExitCodes, type ErrorCode } from '@dbcrate/core';
import { WAL_SERVE_SOCKET, WAL_SERVE_TOKEN } from './wal.serve';

/**
 * restore_command's side of WalServer: ask `recover --start` for one WAL file. The directory
 * must be ours and private (0700), so nobody else can have put a socket there.
 */
export async function fetchFromWalServer(
  dir: string,
  walFile: string,
  opts: { timeoutMs?: number } = {},
): Promise<Buffer> {
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) {
    throw new DbcrateError(
      ErrorCodes.RECOVERY_FAILED,
      `${dir} does not exist: the dbcrate recover --start process that served WAL has ended`,
      { hint: 'run dbcrate recover --start again into a new directory' },
    );
  }
  if ((st.mode & 0o077) !== 0 || (process.getuid && st.uid !== process.getuid())) {
    throw new DbcrateError(ErrorCodes.RECOVERY_FAILED, `${dir} is not a private directory of this user`, {
      hint: 'it must be mode 0700 and owned by the user running restore_command',
    });
  }
  const token = (await readFile(join(dir, WAL_SERVE_TOKEN), 'utf8')).trim();
  const timeoutMs = opts.timeoutMs ?? 15 * 60_000;
  return new Promise<Buffer>((resolve, reject) => {
    const sock = connect(join(dir, WAL_SERVE_SOCKET));
    const chunks: Buffer[] = [];
    sock.setTimeout(timeoutMs, () =>
      sock.destroy(new Error(`no answer from the WAL server in ${dir} within ${timeoutMs / 1000} s`)),
    );
    sock.on('connect', () => sock.write(`${token} ${walFile}\n`));
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', (e) =>
      reject(new DbcrateError(ErrorCodes.RECOVERY_FAILED, `WAL server in ${dir}: ${e.message}`)),
    );
    sock.on('end', () => {
      const all = Buffer.concat(chunks);
      const nl = all.indexOf(0x0a);
      const head = nl < 0 ? all.toString('utf8') : all.subarray(0, nl).toString('utf8');
      const body = nl < 0 ? Buffer.alloc(0) : all.subarray(nl + 1);
      let m: RegExpExecArray | null;
      if ((m = /^OK (\d+)$/.exec(head)) && body.length === Number(m[1])) return resolve(body);
      if ((m = /^MISSING (.*)$/.exec(head))) return reject(new DbcrateError(ErrorCodes.WAL_NOT_FOUND, m[1]));
      if ((m = /^ERROR (E_[A-Z_]+) (.*)$/.exec(head))) {
        const code = (m[1] in ExitCodes ? m[1] : ErrorCodes.INTERNAL) as ErrorCode;
        return reject(new DbcrateError(code, `WAL server: ${m[2]}`));
      }
      reject(
        new DbcrateError(ErrorCodes.RECOVERY_FAILED, `WAL server in ${dir}: truncated or invalid answer`),
      );
    });
  });
}
