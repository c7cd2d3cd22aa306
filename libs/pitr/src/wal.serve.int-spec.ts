import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { WAL_SERVE_SOCKET, WAL_SERVE_TOKEN, WalServer } from './wal.serve';
import { fetchFromWalServer } from './wal.serve.client';

const SEG = '000000010000000000000003';

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(DbcrateError);
    return (e as DbcrateError).code;
  }
  return undefined;
}

describe('WalServer and its client', () => {
  let srv: WalServer;
  const asked: string[] = [];

  beforeAll(async () => {
    srv = await WalServer.start({
      fetch: async (name) => {
        asked.push(name);
        if (name === SEG) return Buffer.alloc(16 * 1024 * 1024, 7);
        throw new DbcrateError(ErrorCodes.WAL_NOT_FOUND, `${name} is not in the archive`);
      },
    });
  });
  afterAll(() => srv.close());

  it('lives in a private directory with a 0600 token and socket', () => {
    expect(statSync(srv.dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(srv.dir, WAL_SERVE_TOKEN)).mode & 0o777).toBe(0o600);
    expect(statSync(join(srv.dir, WAL_SERVE_SOCKET)).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(srv.dir, WAL_SERVE_TOKEN), 'utf8')).toMatch(/^[0-9a-f]{64}$/);
  });

  it('hands a WAL file over whole', async () => {
    const data = await fetchFromWalServer(srv.dir, SEG);
    expect(data.length).toBe(16 * 1024 * 1024);
    expect(data.every((b) => b === 7)).toBe(true);
  });

  it('a file not in the archive is E_WAL_NOT_FOUND (restore_command exit 1)', async () => {
    expect(await codeOf(fetchFromWalServer(srv.dir, '00000005.history'))).toBe(ErrorCodes.WAL_NOT_FOUND);
  });

  it('without the token nothing is served', async () => {
    const before = asked.length;
    const answer = await new Promise<string>((res) => {
      const s = connect(join(srv.dir, WAL_SERVE_SOCKET));
      let out = '';
      s.on('connect', () => s.write(`${'0'.repeat(64)} ${SEG}\n`));
      s.on('data', (d) => (out += d.toString()));
      s.on('end', () => res(out));
    });
    expect(answer).toMatch(/^ERROR E_USAGE bad token/);
    expect(asked.length).toBe(before);
  });

  it('the client refuses a directory others can write to', async () => {
    const d = mkdtempSync(join(tmpdir(), 'dbcrate-fake-'));
    try {
      writeFileSync(join(d, WAL_SERVE_TOKEN), 'x');
      chmodSync(d, 0o777);
      expect(await codeOf(fetchFromWalServer(d, SEG))).toBe(ErrorCodes.RECOVERY_FAILED);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  describe('restore_command as recover writes it: `dbcrate wal-fetch %f %p --from-socket DIR` (built CLI)', () => {
    const bin = resolve(__dirname, '..', '..', '..', 'bin', 'dbcrate.js');
    let cwd: string;
    beforeAll(() => {
      cwd = mkdtempSync(join(tmpdir(), 'dbcrate-rc-'));
    });
    afterAll(() => rmSync(cwd, { recursive: true, force: true }));
    const run = (walFile: string, dest: string, dir = srv.dir) =>
      new Promise<{ code: number; stderr: string }>((res) => {
        execFile(
          process.execPath,
          [bin, 'wal-fetch', walFile, dest, '--from-socket', dir],
          { cwd },
          (e, _o, stderr) => res({ code: e ? Number(e.code) : 0, stderr }),
        );
      });

    it('writes the file PostgreSQL asked for and exits 0', async () => {
      expect(await run(SEG, 'RECOVERYXLOG')).toEqual({ code: 0, stderr: '' });
      const got = readFileSync(join(cwd, 'RECOVERYXLOG'));
      expect(got.length).toBe(16 * 1024 * 1024);
      expect(got.every((b) => b === 7)).toBe(true);
      expect(existsSync(join(cwd, 'RECOVERYXLOG.dbcrate-tmp'))).toBe(false);
    });

    it('a file not in the archive: exit 1 (not there), saying so, and nothing written', async () => {
      const r = await run('00000009.history', 'RECOVERYHISTORY');
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/00000009\.history is not in the archive/);
      expect(existsSync(join(cwd, 'RECOVERYHISTORY'))).toBe(false);
    });

    it('a server that has ended is an error (not "not archived", which would end recovery)', async () => {
      const other = await WalServer.start({ fetch: async () => Buffer.alloc(1) });
      await other.close();
      const r = await run(SEG, 'X', other.dir);
      expect(r.code).toBeGreaterThan(125);
      expect(r.stderr).toMatch(/has ended/);
    });

    it('a bad WAL file name is refused before anything is asked', async () => {
      const before = asked.length;
      const r = await run('../../etc/passwd', 'X');
      expect(r.code).toBeGreaterThan(125);
      expect(asked.length).toBe(before);
    });
  });

  it('once closed, its directory is gone and the client says the server ended', async () => {
    const other = await WalServer.start({ fetch: async () => Buffer.alloc(1) });
    await other.close();
    expect(existsSync(other.dir)).toBe(false);
    expect(await codeOf(fetchFromWalServer(other.dir, SEG))).toBe(ErrorCodes.RECOVERY_FAILED);
  });
});
