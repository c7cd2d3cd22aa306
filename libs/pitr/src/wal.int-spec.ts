/**
 * WAL archiving against real PostgreSQL 15 WAL and a local-folder destination:
 * WalArchiver (push, idempotence, conflicts, foreign clusters, damaged input), fetchWal
 * (round trip, damaged objects), the timeline record of a history file, the resident
 * WalAgent (pushes ahead, answers wal-push over its socket) and the prefetch spool.
 *
 * The clusters run with archive_command = /bin/false, so every completed segment stays in
 * pg_wal with its archive_status/*.ready marker for the whole file.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import {
  copyFile,
  mkdir,
  readdir,
  readFile,
  rename,
  symlink,
  truncate,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import {
  generateKeyPair,
  loadDecryptionKey,
  loadRecipientKey,
  type DecryptionKey,
  type RecipientKey,
} from '@dbcrate/crypto';
import { openStorage, type Storage } from '@dbcrate/storage';
import { startPgCluster, type PgCluster } from '@dbcrate/testing';
import {
  AGENT_PROTOCOL_VERSION,
  agentSecretPath,
  readAgentSecret,
  replyMac,
  requestPush,
} from './agent.protocol';
import { readClusterIdentity, timelineKey, walKey, walLookupPrefix, walPrefix } from './pitr.layout';
import { WalAgent } from './wal.agent';
import { findArchived, readSystemIdentifier, sealWal, sha256Hex, WalArchiver } from './wal.archive';
import { fetchWal, followingSegments, prefetchInto, PrefetchSpool, type WalFetchOptions } from './wal.fetch';
import { DEFAULT_WAL_SEGMENT_SIZE, parseWalFileName } from './wal.names';
import { indexArchive } from './windows';

const ARCHIVE_NOTHING = { archive_mode: 'on', archive_command: '/bin/false' };

async function caught(p: Promise<unknown>): Promise<DbcrateError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof DbcrateError) return e;
    throw e;
  }
  throw new Error('expected a DbcrateError, but it succeeded');
}

async function keysUnder(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(prefix)) out.push(o.key);
  return out.sort();
}

async function readText(storage: Storage, key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await storage.get(key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Completed segments waiting for the (failing) archiver, oldest first. */
async function readySegments(pg: PgCluster): Promise<string[]> {
  return (await readdir(join(pg.dataDir, 'pg_wal', 'archive_status')))
    .filter((f) => f.endsWith('.ready'))
    .map((f) => f.slice(0, -'.ready'.length))
    .filter((n) => parseWalFileName(n)?.kind === 'segment')
    .sort();
}

/** Write a little, switch to a new segment; `n` times. Resolves once n more segments are .ready. */
async function makeSegments(pg: PgCluster, n: number): Promise<string[]> {
  const before = (await readySegments(pg)).length;
  for (let i = 0; i < n; i++) {
    const t = `t_${Date.now()}_${i}`;
    await pg.psql(
      `CREATE TABLE ${t} AS SELECT g, md5(g::text) FROM generate_series(1, 2000) g; SELECT pg_switch_wal();`,
    );
  }
  return until(`${n} new .ready segments`, async () => {
    const ready = await readySegments(pg);
    return ready.length >= before + n ? ready : undefined;
  });
}

function flipByte(buf: Buffer, offset: number): Buffer {
  const copy = Buffer.from(buf);
  copy[offset] ^= 0xff;
  return copy;
}

describe('WAL archive (real PostgreSQL WAL, local folder)', () => {
  let pg: PgCluster;
  let other: PgCluster;
  let work: string;
  let storage: Storage;
  let storeDir: string;
  let recipients: RecipientKey[];
  let keys: DecryptionKey[];
  let sysid: string;
  let otherSysid: string;
  /** .ready segments of `pg`, oldest first (at least 6). */
  let segs: string[];
  let otherSegs: string[];
  const DB = 'orders-prod';
  const walPath = (name: string) => join(pg.dataDir, 'pg_wal', name);
  const seal = (p: Buffer) => sealWal(p, { recipients });
  const fetchOpts = (databaseId = DB): WalFetchOptions => ({ storage, databaseId, keys });

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'dbcrate-wal-int-'));
    storeDir = join(work, 'store');
    storage = await openStorage(`file://${storeDir}`);
    const pair = await generateKeyPair({ name: 'dbcrate WAL test' });
    recipients = [await loadRecipientKey(pair.publicArmored)];
    keys = [await loadDecryptionKey(pair.privateArmored)];
    [pg, other] = await Promise.all([
      startPgCluster({ settings: ARCHIVE_NOTHING }),
      startPgCluster({ settings: ARCHIVE_NOTHING }),
    ]);
    [segs, otherSegs] = await Promise.all([makeSegments(pg, 6), makeSegments(other, 1)]);
    sysid = await readSystemIdentifier(pg.dataDir);
    otherSysid = await readSystemIdentifier(other.dataDir);
  }, 180_000);

  afterAll(async () => {
    await Promise.all([pg?.stop(), other?.stop()]);
    await storage?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('the fixture: two clusters, consecutive complete segments, pg_control matches the server', async () => {
    expect(sysid).toMatch(/^\d+$/);
    expect(sysid).not.toBe(otherSysid);
    expect(await pg.psql('SELECT system_identifier FROM pg_control_system()')).toBe(sysid);
    expect(segs.length).toBeGreaterThanOrEqual(6);
    expect(followingSegments(segs[0], 5)).toEqual(segs.slice(1, 6));
    expect(statSync(walPath(segs[0])).size).toBe(DEFAULT_WAL_SEGMENT_SIZE);
  });

  describe('WalArchiver and fetchWal', () => {
    let archiver: WalArchiver;
    let seg0: Buffer;
    let key0: string;

    beforeAll(async () => {
      archiver = new WalArchiver({ storage, databaseId: DB, systemIdentifier: sysid, seal });
      seg0 = await readFile(walPath(segs[0]));
      key0 = walKey(DB, segs[0], sha256Hex(seg0));
    });

    it('pushes a segment: archived, compressed and encrypted, under its sha256; cluster.json written', async () => {
      const r = await archiver.push(walPath(segs[0]));
      expect(r).toEqual({
        walFile: segs[0],
        outcome: 'archived',
        key: key0,
        plainBytes: DEFAULT_WAL_SEGMENT_SIZE,
        storedBytes: expect.any(Number),
      });
      expect(r.storedBytes).toBeGreaterThan(0);
      expect(r.storedBytes).toBeLessThan(DEFAULT_WAL_SEGMENT_SIZE / 4);
      const stored = await readFile(join(storeDir, ...key0.split('/')));
      expect(stored.length).toBe(r.storedBytes);
      expect(stored.includes(seg0.subarray(0, 40))).toBe(false); // not plaintext
      expect(await readClusterIdentity(storage, DB)).toMatchObject({
        databaseId: DB,
        systemIdentifier: sysid,
        walSegmentSize: DEFAULT_WAL_SEGMENT_SIZE,
      });
    });

    it('pushing it again is success ("already-archived") and stores nothing new', async () => {
      const again = await archiver.push(walPath(segs[0]));
      expect(again.outcome).toBe('already-archived');
      expect(again.key).toBe(key0);
      // a fresh archiver, as the next wal-push process would be
      const fresh = new WalArchiver({ storage, databaseId: DB, systemIdentifier: sysid, seal });
      expect((await fresh.push(walPath(segs[0]))).outcome).toBe('already-archived');
      expect(await keysUnder(storage, walLookupPrefix(DB, segs[0]))).toEqual([key0]);
    });

    it('an empty object taking the name during the put is not "already archived"', async () => {
      const db = 'zero-race';
      const buf = await readFile(walPath(segs[1]));
      const key = walKey(db, segs[1], sha256Hex(buf));
      const racing = new WalArchiver({
        storage,
        databaseId: db,
        systemIdentifier: sysid,
        seal,
        // after the early check, before the no-replace link: a broken writer leaves 0 bytes
        hooks: { beforeCommit: () => writeFile(join(storeDir, ...key.split('/')), '') },
      });
      expect((await caught(racing.push(walPath(segs[1])))).code).toBe(ErrorCodes.INTEGRITY);
      // PostgreSQL's retry replaces the empty object
      const retry = new WalArchiver({ storage, databaseId: db, systemIdentifier: sysid, seal });
      expect((await retry.push(walPath(segs[1]))).outcome).toBe('archived');
      expect((await fetchWal(fetchOpts(db), segs[1])).equals(buf)).toBe(true);
    });

    it('fetchWal returns the identical bytes', async () => {
      const plain = await fetchWal(fetchOpts(), segs[0]);
      expect(plain.length).toBe(seg0.length);
      expect(plain.equals(seg0)).toBe(true);
    });

    it('different content under an archived name is E_WAL_CONFLICT and leaves the archive alone', async () => {
      const dir = join(work, 'conflict');
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, segs[0]), flipByte(seg0, 100_000));
      const storedBefore = await readFile(join(storeDir, ...key0.split('/')));
      const e = await caught(archiver.push(join(dir, segs[0])));
      expect(e.code).toBe(ErrorCodes.WAL_CONFLICT);
      expect(e.exitCode).not.toBe(0);
      expect(e.message).toContain(segs[0]);
      expect(await keysUnder(storage, walLookupPrefix(DB, segs[0]))).toEqual([key0]);
      expect((await readFile(join(storeDir, ...key0.split('/')))).equals(storedBefore)).toBe(true);
      expect((await fetchWal(fetchOpts(), segs[0])).equals(seg0)).toBe(true);
    });

    it('a segment of another cluster is E_CLUSTER_MISMATCH (from its page header)', async () => {
      const before = await keysUnder(storage, walPrefix(DB));
      const e = await caught(archiver.push(join(other.dataDir, 'pg_wal', otherSegs[0])));
      expect(e.code).toBe(ErrorCodes.CLUSTER_MISMATCH);
      expect(e.message).toContain(otherSysid);
      expect(await keysUnder(storage, walPrefix(DB))).toEqual(before);
    });

    it('a segment whose header carries another system identifier is refused too', async () => {
      const dir = join(work, 'patched');
      await mkdir(dir, { recursive: true });
      const patched = Buffer.from(await readFile(walPath(segs[1])));
      patched.writeBigUInt64LE(BigInt(sysid) ^ 1n, 24);
      await writeFile(join(dir, segs[1]), patched);
      const e = await caught(archiver.push(join(dir, segs[1])));
      expect(e.code).toBe(ErrorCodes.CLUSTER_MISMATCH);
      expect(e.message).toContain((BigInt(sysid) ^ 1n).toString());
      expect(await findArchived(storage, DB, segs[1])).toEqual([]);
    });

    it('another cluster under the same database id is E_CLUSTER_MISMATCH (from cluster.json)', async () => {
      const before = await keysUnder(storage, walPrefix(DB));
      const intruder = new WalArchiver({ storage, databaseId: DB, systemIdentifier: otherSysid, seal });
      const e = await caught(intruder.push(join(other.dataDir, 'pg_wal', otherSegs[0])));
      expect(e.code).toBe(ErrorCodes.CLUSTER_MISMATCH);
      expect(e.message).toContain(`database id "${DB}"`);
      expect(e.message).toContain(`system identifier ${sysid}, not ${otherSysid}`);
      expect(await keysUnder(storage, walPrefix(DB))).toEqual(before);
      expect((await readClusterIdentity(storage, DB))?.systemIdentifier).toBe(sysid);
      // under its own id the same segment is welcome
      const own = new WalArchiver({ storage, databaseId: otherSysid, systemIdentifier: otherSysid, seal });
      expect((await own.push(join(other.dataDir, 'pg_wal', otherSegs[0]))).outcome).toBe('archived');
    });

    it('a truncated segment is refused and nothing is stored', async () => {
      const dir = join(work, 'truncated');
      await mkdir(dir, { recursive: true });
      await copyFile(walPath(segs[1]), join(dir, segs[1]));
      await truncate(join(dir, segs[1]), 3 * 8192);
      const e = await caught(archiver.push(join(dir, segs[1])));
      expect(e.code).toBe(ErrorCodes.INTEGRITY);
      expect(e.message).toContain(`${3 * 8192} bytes`);
      expect(await findArchived(storage, DB, segs[1])).toEqual([]);
    });

    it('a file that is not WAL (zeros), or is missing, is refused', async () => {
      const dir = join(work, 'zeros');
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, segs[1]), Buffer.alloc(DEFAULT_WAL_SEGMENT_SIZE));
      expect((await caught(archiver.push(join(dir, segs[1])))).code).toBe(ErrorCodes.INTEGRITY);
      expect((await caught(archiver.push(join(dir, segs[2])))).code).toBe(ErrorCodes.USAGE);
      expect((await caught(archiver.push(join(dir, 'not-a-wal-file')))).code).toBe(ErrorCodes.USAGE);
      expect(await findArchived(storage, DB, segs[1])).toEqual([]);
    });

    it('fetchWal of a name that is not archived is E_WAL_NOT_FOUND (exit code 1)', async () => {
      const e = await caught(fetchWal(fetchOpts(), '0000000100000000000000FF'));
      expect(e.code).toBe(ErrorCodes.WAL_NOT_FOUND);
      expect(e.exitCode).toBe(1);
      expect((await caught(fetchWal(fetchOpts(), '00000009.history'))).code).toBe(ErrorCodes.WAL_NOT_FOUND);
      expect((await caught(fetchWal(fetchOpts(), 'RECOVERYXLOG'))).code).toBe(ErrorCodes.USAGE);
    });

    it('a stored object with a flipped byte is E_INTEGRITY, not E_WRONG_KEY', async () => {
      const db = 'damaged';
      const a = new WalArchiver({ storage, databaseId: db, systemIdentifier: sysid, seal });
      const { key } = await a.push(walPath(segs[2]));
      const file = join(storeDir, ...key.split('/'));
      const stored = await readFile(file);
      await writeFile(file, flipByte(stored, Math.floor(stored.length / 2)));
      const e = await caught(fetchWal(fetchOpts(db), segs[2]));
      expect(e.code).toBe(ErrorCodes.INTEGRITY);
      // the last byte (inside the integrity tag) too
      await writeFile(file, flipByte(stored, stored.length - 1));
      expect((await caught(fetchWal(fetchOpts(db), segs[2]))).code).toBe(ErrorCodes.INTEGRITY);
    });

    it('an intact object whose plaintext does not match the sha256 in its name is E_INTEGRITY', async () => {
      const db = 'swapped';
      const seg3 = await readFile(walPath(segs[3]));
      // segment 4's content, sealed correctly, stored under segment 3's name and sha256
      const sealed = await seal(await readFile(walPath(segs[4])));
      await storage.put(walKey(db, segs[3], sha256Hex(seg3)), Readable.from([Buffer.from(sealed)]));
      const e = await caught(fetchWal(fetchOpts(db), segs[3]));
      expect(e.code).toBe(ErrorCodes.INTEGRITY);
      expect(e.message).toContain('sha256');
    });

    it('a .history file is archived and its ancestry written to timelines/<TLI>.json', async () => {
      const dir = join(work, 'history');
      await mkdir(dir, { recursive: true });
      const content = '1\t0/3000060\tno recovery target specified\n';
      await writeFile(join(dir, '00000002.history'), content);
      const r = await archiver.push(join(dir, '00000002.history'));
      expect(r.outcome).toBe('archived');
      expect(r.key).toBe(walKey(DB, '00000002.history', sha256Hex(Buffer.from(content))));
      expect(JSON.parse(await readText(storage, timelineKey(DB, 2)))).toEqual({
        format: 'dbcrate.timeline',
        formatVersion: 1,
        timeline: 2,
        history: [{ timeline: 1, switchLsn: '0/3000060' }],
      });
      expect((await fetchWal(fetchOpts(), '00000002.history')).toString()).toBe(content);
      const index = await indexArchive(storage, DB);
      expect(index.histories.get(2)).toEqual([{ timeline: 1, switchLsn: '0/3000060' }]);
      expect(index.timelines).toEqual([1, 2]);
    });

    // The timeline record is written only after the WAL object, and only on the push that
    // stored it: when writing it fails once, PostgreSQL's retry finds the history file
    // "already archived" and returns success without ever writing timelines/<TLI>.json.
    it('a retried .history push still writes timelines/<TLI>.json after a failed first attempt', async () => {
      const db = 'flaky-timeline';
      let failOnce = true;
      const flaky: Storage = Object.assign(Object.create(storage) as Storage, {
        put: (key: string, body: Readable, opts?: Parameters<Storage['put']>[2]) => {
          if (failOnce && key.includes('/timelines/')) {
            failOnce = false;
            body.destroy();
            return Promise.reject(new DbcrateError(ErrorCodes.STORAGE_IO, 'simulated network failure'));
          }
          return storage.put(key, body, opts);
        },
      });
      const dir = join(work, 'history-flaky');
      await mkdir(dir, { recursive: true });
      await writeFile(
        join(dir, '00000003.history'),
        '1\t0/3000060\tno recovery target specified\n2\t0/5000000\tno recovery target specified\n',
      );
      const a = new WalArchiver({ storage: flaky, databaseId: db, systemIdentifier: sysid, seal });
      expect((await caught(a.push(join(dir, '00000003.history')))).code).toBe(ErrorCodes.STORAGE_IO);
      // the WAL object itself was stored before the timeline record failed
      expect(await findArchived(storage, db, '00000003.history')).toHaveLength(1);
      // PostgreSQL retries archive_command: success, since the history file is archived …
      expect((await a.push(join(dir, '00000003.history'))).outcome).toBe('already-archived');
      // … but windows/recover need its ancestry
      expect(await storage.head(timelineKey(db, 3))).toBeDefined();
    });
  });

  describe('WalAgent', () => {
    let agent: WalAgent;
    let agentStore: Storage;
    let socket: string;

    beforeAll(async () => {
      agentStore = await openStorage(`file://${join(work, 'agent-store')}`);
      socket = join(work, 'agent.sock');
      agent = new WalAgent({
        pgdata: pg.dataDir,
        socketPath: socket,
        storage: agentStore,
        databaseId: DB,
        systemIdentifier: sysid,
        seal: { recipients },
        parallel: 3,
        scanIntervalMs: 200,
      });
      await agent.start();
    });

    afterAll(async () => {
      await agent?.stop();
      await agentStore?.close();
    });

    const allArchived = async (names: string[]) => {
      for (const n of names) if ((await findArchived(agentStore, DB, n)).length === 0) return undefined;
      return true;
    };

    it('listens on its socket, readable by its owner only', () => {
      expect(statSync(socket).isSocket()).toBe(true);
      expect(statSync(socket).mode & 0o077).toBe(0);
    });

    it('pushes every .ready segment by itself', async () => {
      const ready = await readySegments(pg);
      await until('the agent to push the ready segments', () => allArchived(ready));
      for (const n of ready.slice(0, 2)) {
        const plain = await fetchWal({ storage: agentStore, databaseId: DB, keys }, n);
        expect(plain.equals(await readFile(walPath(n)))).toBe(true);
      }
    });

    it('pushes a segment completed while it runs', async () => {
      const now = await makeSegments(pg, 1);
      await until('the agent to push the new segment', () => allArchived([now[now.length - 1]]));
    });

    it('answers wal-push for a segment it pushed ahead: ok, with the key', async () => {
      const reply = await requestPush(socket, walPath(segs[0]), { timeoutMs: 60_000 });
      const sha = sha256Hex(await readFile(walPath(segs[0])));
      expect(reply).toEqual({
        ok: true,
        outcome: expect.stringMatching(/archived/),
        key: walKey(DB, segs[0], sha),
      });
      expect(await keysUnder(agentStore, walLookupPrefix(DB, segs[0]))).toEqual([walKey(DB, segs[0], sha)]);
    });

    it('refuses a file outside its own pg_wal (a different segment, another cluster’s history file): nothing archived', async () => {
      const conflict = await requestPush(socket, join(work, 'conflict', segs[0]), { timeoutMs: 60_000 });
      expect(conflict).toMatchObject({ ok: false, code: ErrorCodes.CONFIG, exitCode: 2 });
      expect(await findArchived(agentStore, DB, segs[0])).toHaveLength(1);
      // A history file has no header naming its cluster: only the path betrays it.
      const elsewhere = join(work, 'elsewhere', 'pg_wal');
      await mkdir(elsewhere, { recursive: true });
      await writeFile(join(elsewhere, '0000000A.history'), '9\t0/3000000\tno recovery target specified\n');
      const reply = await requestPush(socket, join(elsewhere, '0000000A.history'), { timeoutMs: 60_000 });
      expect(reply).toMatchObject({ ok: false, code: ErrorCodes.CONFIG, exitCode: 2 });
      expect((reply as { message: string }).message).toMatch(/its own data directory/);
      expect(await findArchived(agentStore, DB, '0000000A.history')).toHaveLength(0);
      expect(await keysUnder(agentStore, `${DB}/timelines/`)).toEqual([]);
    });

    it('answers ok:false for a path that does not exist', async () => {
      const reply = await requestPush(socket, join(work, 'nowhere', segs[0]), { timeoutMs: 60_000 });
      expect(reply).toMatchObject({ ok: false, code: ErrorCodes.CONFIG });
      const missing = await requestPush(socket, walPath('000000010000000F000000FF'), { timeoutMs: 60_000 });
      expect(missing).toMatchObject({ ok: false, code: ErrorCodes.USAGE });
    });

    it('speaks its protocol version: a request of another version is refused, authenticated; one without is version 1', async () => {
      const raw = (req: object) =>
        new Promise<string[]>((done, fail) => {
          const c = createConnection(socket);
          let buf = '';
          c.setEncoding('utf8');
          c.on('connect', () => c.write(JSON.stringify(req) + '\n'));
          c.on('data', (d: string) => (buf += d));
          c.on('error', fail);
          c.on('close', () => done(buf.split('\n')));
        });
      const secret = readAgentSecret(socket);
      const nonce = 'ab'.repeat(16);
      const [line, mac] = await raw({ v: 2, op: 'push', path: walPath(segs[0]), nonce });
      expect(JSON.parse(line)).toMatchObject({ ok: false, code: ErrorCodes.AGENT, exitCode: 4 });
      expect(JSON.parse(line).message).toMatch(/protocol version 1; this request is version 2/);
      expect(mac).toBe(replyMac(secret, nonce, line));
      // A request line that is JSON but no object is refused; the agent lives on.
      const [nul] = await raw(null as unknown as object);
      expect(JSON.parse(nul)).toMatchObject({ ok: false, code: ErrorCodes.USAGE });
      const [old] = await raw({ op: 'push', path: walPath(segs[0]), nonce });
      expect(JSON.parse(old)).toMatchObject({ ok: true, outcome: expect.stringMatching(/archived/) });
      expect(AGENT_PROTOCOL_VERSION).toBe(1);
    });

    it('a push that names no file is refused, not answered with a ping’s "ok"', async () => {
      const reply = await requestPush(socket, '', { timeoutMs: 60_000 });
      expect(reply).toMatchObject({ ok: false, code: ErrorCodes.USAGE });
    });

    it('a second start() of a running agent is refused and leaves it serving', async () => {
      expect((await caught(agent.start())).code).toBe(ErrorCodes.INTERNAL);
      const reply = await requestPush(socket, walPath(segs[0]), { timeoutMs: 60_000 });
      expect(reply).toMatchObject({ ok: true });
    });

    it('an agent stopped while it starts does not stay up: no socket, no secret, start() fails', async () => {
      const sock = join(work, 'stopped-while-starting.sock');
      const third = new WalAgent({
        pgdata: pg.dataDir,
        socketPath: sock,
        storage: agentStore,
        databaseId: DB,
        systemIdentifier: sysid,
        seal: { recipients },
      });
      const starting = third.start();
      const stopping = third.stop();
      expect((await caught(starting)).code).toBe(ErrorCodes.INTERRUPTED);
      await stopping;
      expect(existsSync(sock)).toBe(false);
      expect(existsSync(agentSecretPath(sock))).toBe(false);
    });

    it('a second agent on the same socket is refused', async () => {
      const second = new WalAgent({
        pgdata: pg.dataDir,
        socketPath: socket,
        storage: agentStore,
        databaseId: DB,
        systemIdentifier: sysid,
        seal: { recipients },
      });
      expect((await caught(second.start())).code).toBe(ErrorCodes.CONFIG);
      expect(existsSync(socket)).toBe(true);
    });

    it('an agent that fails to start does not replace the running agent’s secret', async () => {
      // The running agent's socket moved aside and a dangling symlink in its place: the
      // second agent sees no socket, and its listen then fails (the path is taken).
      const aside = `${socket}.aside`;
      await rename(socket, aside);
      await symlink(join(work, 'no-such-target'), socket);
      const second = new WalAgent({
        pgdata: pg.dataDir,
        socketPath: socket,
        storage: agentStore,
        databaseId: DB,
        systemIdentifier: sysid,
        seal: { recipients },
      });
      await expect(second.start()).rejects.toThrow();
      await second.stop();
      await unlink(socket).catch(() => undefined);
      await rename(aside, socket);
      const reply = await requestPush(socket, walPath(segs[0]), { timeoutMs: 60_000 });
      expect(reply).toMatchObject({ ok: true });
    });

    it('stop() removes the socket; wal-push then finds no agent', async () => {
      await agent.stop();
      expect(existsSync(socket)).toBe(false);
      expect(await requestPush(socket, walPath(segs[0]), { timeoutMs: 5000 })).toBeUndefined();
    });
  });

  describe('PrefetchSpool and prefetchInto', () => {
    let pgdata: string;
    let spool: PrefetchSpool;

    beforeAll(async () => {
      const archiver = new WalArchiver({ storage, databaseId: DB, systemIdentifier: sysid, seal });
      for (const n of segs.slice(0, 5)) await archiver.push(walPath(n));
      pgdata = join(work, 'pgdata');
      await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
      spool = new PrefetchSpool(pgdata);
    });

    it('prefetches the 3 following segments into pg_wal/dbcrate-prefetch', async () => {
      const names = followingSegments(segs[0], 3);
      expect(names).toEqual(segs.slice(1, 4));
      expect(await prefetchInto(spool, fetchOpts(), names, 2)).toBe(3);
      expect(spool.dir).toBe(join(pgdata, 'pg_wal', 'dbcrate-prefetch'));
      expect((await readdir(spool.dir)).sort()).toEqual(names);
      for (const n of names) expect(await spool.has(n)).toBe(true);
      // already there: nothing fetched again
      expect(await prefetchInto(spool, fetchOpts(), names, 2)).toBe(0);
    });

    it('take() moves a prefetched file into place with identical bytes', async () => {
      const dest = join(pgdata, 'pg_wal', 'RECOVERYXLOG');
      expect(await spool.take(segs[1], dest)).toBe(true);
      expect((await readFile(dest)).equals(await readFile(walPath(segs[1])))).toBe(true);
      expect(await spool.has(segs[1])).toBe(false);
      expect(await spool.take(segs[1], dest)).toBe(false);
    });

    it('prune() drops what recovery has gone past, and leftovers', async () => {
      await writeFile(join(spool.dir, `${segs[3]}.dbcrate-tmp`), 'half');
      await spool.prune(segs[2]);
      expect(await readdir(spool.dir)).toEqual([segs[3]]);
    });

    it('stops at the first segment that is not archived', async () => {
      await spool.clear();
      const names = followingSegments(segs[3], 4); // segs[4] is archived, the rest is not
      expect(await prefetchInto(spool, fetchOpts(), names, 1)).toBe(1);
      expect(await spool.has(segs[4])).toBe(true);
      for (const n of names.slice(1)) expect(await spool.has(n)).toBe(false);
    });

    it('tryLock(): one prefetcher at a time; unlock; a dead holder’s lock is taken over', async () => {
      expect(spool.tryLock()).toBe(true);
      expect(spool.locked()).toBe(true);
      expect(await readFile(join(spool.dir, '.prefetch.lock'), 'utf8')).toBe(String(process.pid));
      expect(spool.tryLock()).toBe(false);
      await spool.unlock();
      expect(spool.locked()).toBe(false);
      const dead = spawnSync('true').pid;
      await writeFile(join(spool.dir, '.prefetch.lock'), String(dead));
      expect(spool.locked()).toBe(false);
      expect(spool.tryLock()).toBe(true);
      await spool.unlock();
    });
  });
});
