import { randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, logger } from '@dbcrate/core';
import { removeTree } from './tree.remove';
import { parseWalFileName } from './wal.names';

/** Inside the serving directory: the socket and the token a client must present. */
export const WAL_SERVE_SOCKET = 'wal.sock';
export const WAL_SERVE_TOKEN = 'token';
const MAX_REQUEST = 512;

export interface WalServeOptions {
  /** Download, decrypt and check one WAL file (E_WAL_NOT_FOUND when it is not archived). */
  fetch: (walFile: string) => Promise<Uint8Array>;
  /** The OS user that may connect (the recovered server's), when we run as root. */
  owner?: { uid: number; gid: number };
  /** Where the private directory is made (default the system temp dir; keep it short: sun_path is 108 bytes). */
  parent?: string;
}

/**
 * `recover --start` keeps the decrypted private key in its own memory and hands WAL to
 * restore_command over this socket, so that the recovered server never holds the key's
 * passphrase nor needs to read the key. The socket lives in a fresh 0700 directory owned by
 * the server's OS user; a client must also present a random token from a 0600 file there
 * (the token is not the key: all it grants is WAL files while recovery runs).
 *
 * Protocol, one request per connection: `<token> <WAL file name>\n`; answer
 * `OK <size>\n` and the bytes, `MISSING <message>\n` (not archived) or `ERROR <code> <message>\n`.
 */
export class WalServer {
  private constructor(
    readonly dir: string,
    private readonly server: Server,
    private readonly sockets: Set<Socket>,
  ) {}

  get socketPath(): string {
    return join(this.dir, WAL_SERVE_SOCKET);
  }

  static async start(opts: WalServeOptions): Promise<WalServer> {
    const dir = await mkdtemp(join(opts.parent ?? tmpdir(), 'dbcrate-wal-'));
    await chmod(dir, 0o700);
    const token = randomBytes(32).toString('hex');
    const tokenFile = join(dir, WAL_SERVE_TOKEN);
    await writeFile(tokenFile, token, { mode: 0o600 });
    const sockets = new Set<Socket>();
    const server = createServer((sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
      serve(sock, token, opts.fetch);
    });
    const path = join(dir, WAL_SERVE_SOCKET);
    try {
      await new Promise<void>((res, rej) => {
        server.once('error', rej);
        server.listen(path, () => res());
      });
      await chmod(path, 0o600);
      if (opts.owner) {
        for (const p of [dir, tokenFile, path]) await chown(p, opts.owner.uid, opts.owner.gid);
      }
    } catch (e) {
      server.close();
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    return new WalServer(dir, server, sockets);
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    await removeTree(this.dir);
  }
}

function serve(sock: Socket, token: string, fetch: WalServeOptions['fetch']): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('error', () => undefined);
  const onData = (chunk: string) => {
    buf += chunk;
    const nl = buf.indexOf('\n');
    if (nl < 0) {
      if (buf.length > MAX_REQUEST) sock.destroy();
      return;
    }
    sock.off('data', onData);
    const [given, walFile] = buf.slice(0, nl).split(' ');
    const a = Buffer.from(given ?? '');
    const b = Buffer.from(token);
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      sock.end(`ERROR ${ErrorCodes.USAGE} bad token\n`);
      return;
    }
    if (!walFile || !parseWalFileName(walFile)) {
      sock.end(`ERROR ${ErrorCodes.USAGE} not a WAL file name\n`);
      return;
    }
    fetch(walFile).then(
      (data) => {
        sock.write(`OK ${data.length}\n`);
        sock.end(data);
      },
      (e: unknown) => {
        const code = (e as { code?: string }).code ?? ErrorCodes.INTERNAL;
        const message = ((e as Error).message ?? String(e)).replace(/\n/g, ' ');
        if (code !== ErrorCodes.WAL_NOT_FOUND) logger().warn({ walFile, err: message }, 'serving WAL failed');
        sock.end(code === ErrorCodes.WAL_NOT_FOUND ? `MISSING ${message}\n` : `ERROR ${code} ${message}\n`);
      },
    );
  };
  sock.on('data', onData);
}
