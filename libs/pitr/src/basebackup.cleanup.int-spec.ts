/**
 * A base backup that does not finish leaves nothing in the destination: no data object and
 * no empty folder, on a local folder and over SFTP (real sshd), whether it is interrupted
 * while uploading or its manifest cannot be written.
 */
import { mkdtempSync, readdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { generateKeyPair, loadRecipientKey, type RecipientKey } from '@dbcrate/crypto';
import { openStorage, type PutOptions, type Storage } from '@dbcrate/storage';
import { startPgCluster, startSshd, type PgCluster, type SshdHarness } from '@dbcrate/testing';
import { runBaseBackup, type BaseBackupOptions } from './basebackup.pipeline';
import { runPgdataBackup } from './pgdata.backup';

async function caught(p: Promise<unknown>): Promise<DbcrateError> {
  try {
    await p;
  } catch (e) {
    return e as DbcrateError;
  }
  throw new Error('expected a rejection');
}

/** Every entry under `root`, folders with a trailing "/". */
function tree(root: string, rel = ''): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(root, rel), { withFileTypes: true })) {
    const p = `${rel}${e.name}`;
    if (e.isDirectory()) out.push(`${p}/`, ...tree(root, `${p}/`));
    else out.push(p);
  }
  return out.sort();
}

/**
 * A real storage with two hooks: `onFirstChunk` runs when the data upload has started
 * (its folder exists, its first bytes are on the way), and manifest puts can be refused.
 */
function hooked(storage: Storage, hooks: { onFirstChunk?: () => void; refuseManifest?: boolean }): Storage {
  return new Proxy(storage, {
    get(target, prop, receiver) {
      if (prop === 'put') {
        return async (key: string, body: Readable, opts?: PutOptions) => {
          if (key.endsWith('.manifest.json') && hooks.refuseManifest) {
            body.resume();
            throw new DbcrateError(ErrorCodes.STORAGE_IO, `cannot write "${key}": injected failure`);
          }
          if (!key.endsWith('.pgp') || !hooks.onFirstChunk) return target.put(key, body, opts);
          let first = true;
          const tap = new Transform({
            transform(chunk, _enc, cb) {
              if (first) {
                first = false;
                hooks.onFirstChunk!();
              }
              cb(null, chunk);
            },
          });
          body.on('error', (e) => tap.destroy(e));
          // a put that has given up no longer listens to tap: a late error of the body stops here
          tap.on('error', () => undefined);
          return target.put(key, body.pipe(tap), opts);
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe('an unfinished base backup leaves nothing behind', () => {
  let pg: PgCluster;
  let sshd: SshdHarness;
  let dir: string;
  let recipient: RecipientKey;

  beforeAll(async () => {
    pg = await startPgCluster({
      settings: { archive_mode: 'on', archive_command: 'true', wal_level: 'replica' },
    });
    sshd = await startSshd();
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-base-cleanup-'));
    const pair = await generateKeyPair({ name: 'base cleanup', passphrase: 'base-cleanup-pass' });
    recipient = await loadRecipientKey(pair.publicArmored);
  }, 120_000);

  afterAll(async () => {
    await Promise.allSettled([pg?.stop(), sshd?.stop(), dir && rm(dir, { recursive: true, force: true })]);
  });

  const destinations = [
    ['a local folder', async (name: string) => ({ url: `file://${join(dir, name)}`, root: join(dir, name) })],
    ['SFTP', async (name: string) => ({ url: sshd.url(name), root: join(sshd.root, name) })],
  ] as const;

  const methods = [
    ['pg_basebackup', runBaseBackup],
    [
      'pgdata',
      (o: BaseBackupOptions) =>
        runPgdataBackup({ ...o, parallel: 3, hooks: { archived: async () => undefined } }),
    ],
  ] as const;
  const cases = destinations.flatMap(([label, where]) =>
    methods.map(([method, run]) => [`${label} (${method})`, where, run] as const),
  );

  describe.each(cases)('on %s', (_label, where, runBaseBackup) => {
    it('interrupted while uploading: no data object, no empty folder', async () => {
      const { url, root } = await where(`interrupted-${_label.replace(/\W+/g, '-')}`);
      const storage = await openStorage(url);
      const ac = new AbortController();
      try {
        const e = await caught(
          runBaseBackup({
            dbUrl: pg.superuserUrl,
            storage: hooked(storage, { onFirstChunk: () => ac.abort(new Error('SIGINT received')) }),
            recipients: [recipient],
            databaseId: 'cl',
            signal: ac.signal,
          }),
        );
        expect(e.code).toBe(ErrorCodes.INTERRUPTED);
      } finally {
        await storage.close();
      }
      expect(tree(root)).toEqual(['cl/', 'cl/cluster.json']);
    });

    it('its manifest cannot be written: the data object and its folder are removed', async () => {
      const { url, root } = await where(`no-manifest-${_label.replace(/\W+/g, '-')}`);
      const storage = await openStorage(url);
      try {
        const e = await caught(
          runBaseBackup({
            dbUrl: pg.superuserUrl,
            storage: hooked(storage, { refuseManifest: true }),
            recipients: [recipient],
            databaseId: 'cl',
          }),
        );
        expect(e.message).toContain('injected failure');
      } finally {
        await storage.close();
      }
      expect(tree(root)).toEqual(['cl/', 'cl/cluster.json']);
    });
  });
});
