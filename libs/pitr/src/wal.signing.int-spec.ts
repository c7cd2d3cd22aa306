/**
 * Signed WAL (docs/signing.md): each object is signed inside its encryption, bound to its
 * database id and file name, so a forged segment (encrypted to the public key, unsigned) or
 * a validly signed one stored under another name is refused by wal-fetch; gpg --decrypt
 * reports the good signature without dbcrate.
 */
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { getCodec } from '@dbcrate/compression';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import {
  generateKeyPair,
  loadDecryptionKey,
  loadRecipientKey,
  type DecryptionKey,
  type RecipientKey,
} from '@dbcrate/crypto';
import { openStorage, type Storage } from '@dbcrate/storage';
import { GpgHome, removeTestSigning, runCli, testSigning, type TestSigning } from '@dbcrate/testing';
import { ensureClusterIdentity, walKey } from './pitr.layout';
import { openWal, sealWal, sha256Hex } from './wal.archive';

async function caught(p: Promise<unknown>): Promise<DbcrateError> {
  try {
    await p;
  } catch (e) {
    return e as DbcrateError;
  }
  throw new Error('expected a rejection');
}

const SEG = '000000010000000000000007';
const OTHER = '000000010000000000000008';

describe('signed WAL objects', () => {
  let dir: string;
  let storage: Storage;
  let recipient: RecipientKey;
  let key: DecryptionKey;
  let privateArmored: string;
  let signer: TestSigning;
  let intruder: TestSigning;
  const plain = Buffer.alloc(64 * 1024, 7);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-wal-sign-'));
    storage = await openStorage(`file://${join(dir, 'dest')}`);
    const pair = await generateKeyPair({ name: 'wal sign test' });
    privateArmored = pair.privateArmored;
    recipient = await loadRecipientKey(pair.publicArmored);
    key = await loadDecryptionKey(pair.privateArmored);
    signer = await testSigning('wal-signer');
    intruder = await testSigning('wal-intruder');
  });
  afterAll(async () => {
    await storage?.close();
    removeTestSigning(signer);
    removeTestSigning(intruder);
    await rm(dir, { recursive: true, force: true });
  });

  const seal = (walFile: string, opts: { signer?: TestSigning; databaseId?: string } = {}) =>
    sealWal(
      plain,
      { recipients: [recipient], signingKey: opts.signer?.key, databaseId: opts.databaseId ?? 'db1' },
      walFile,
    );
  const check = (walFile: string, allowUnsigned = false) => ({
    trust: { ...signer.trust, allowUnsigned },
    databaseId: 'db1',
    walFile,
  });

  it('opens what the trusted signer sealed for this database id and name', async () => {
    const sealed = await seal(SEG, { signer });
    expect(await openWal(sealed, [key], check(SEG))).toEqual(plain);
  });

  it('refuses an unsigned object, one signed by another key, for another name or another database id', async () => {
    const unsigned = await seal(SEG);
    let e = await caught(openWal(unsigned, [key], check(SEG)));
    expect(e.code).toBe(ErrorCodes.UNTRUSTED);
    expect(e.message).toMatch(/no signature/);
    // archives from before signing: accepted only when asked for
    expect(await openWal(unsigned, [key], check(SEG, true))).toEqual(plain);

    e = await caught(openWal(await seal(SEG, { signer: intruder }), [key], check(SEG)));
    expect(e.code).toBe(ErrorCodes.UNTRUSTED);
    // a bad signature is no missing one: --allow-unsigned does not let it in
    e = await caught(openWal(await seal(SEG, { signer: intruder }), [key], check(SEG, true)));
    expect(e.code).toBe(ErrorCodes.UNTRUSTED);

    e = await caught(openWal(await seal(OTHER, { signer }), [key], check(SEG)));
    expect(e.code).toBe(ErrorCodes.UNTRUSTED);
    expect(e.message).toContain(`db1/${OTHER}`);
    e = await caught(openWal(await seal(SEG, { signer, databaseId: 'db2' }), [key], check(SEG)));
    expect(e.code).toBe(ErrorCodes.UNTRUSTED);
  });

  it('gpg --decrypt shows a good signature and the binding, and the output is the zstd stream', async () => {
    const gpg = new GpgHome();
    try {
      await gpg.import(privateArmored);
      await gpg.import(signer.publicArmored);
      const file = join(dir, `${SEG}.zst.pgp`);
      writeFileSync(file, await seal(SEG, { signer }));
      const r = await gpg.run(['--verify-options', 'show-notations', '--decrypt', file]);
      expect(r.stderr).toMatch(/Good signature from "wal-signer"/);
      expect(r.stderr).toContain(`binding@dbcrate=db1/${SEG}`);
      expect(r.code).toBe(0);
      expect(await getCodec('zstd').decompressBuffer(r.stdout)).toEqual(plain);
    } finally {
      gpg.remove();
    }
  });

  it('dbcrate wal-fetch refuses a forged segment and writes nothing', async () => {
    await ensureClusterIdentity(storage, 'db1', {
      systemIdentifier: '7000000000000000001',
      walSegmentSize: 16 * 1024 * 1024,
    });
    const sha = sha256Hex(plain);
    await storage.put(walKey('db1', SEG, sha), Readable.from([Buffer.from(await seal(SEG))]));
    await storage.put(walKey('db1', OTHER, sha), Readable.from([Buffer.from(await seal(SEG, { signer }))]));
    const keyFile = join(dir, 'org.key.asc');
    writeFileSync(keyFile, privateArmored, { mode: 0o600 });
    const pgdata = mkdtempSync(join(dir, 'pgdata-'));
    for (const name of [SEG, OTHER]) {
      const out = join(pgdata, `RECOVERYXLOG-${name}`);
      const r = await runCli(
        [
          'wal-fetch',
          name,
          out,
          '--from',
          `file://${join(dir, 'dest')}`,
          '--key',
          keyFile,
          '--database-id',
          'db1',
          '--pgdata',
          pgdata,
          '--prefetch',
          '0',
        ],
        { env: { DBCRATE_TRUST: signer.pubFile } },
      );
      expect(r.stderr).toMatch(/E_UNTRUSTED/);
      expect(r.code).toBe(128 + 10);
      expect(existsSync(out)).toBe(false);
    }
    // the same object fetched as what it was signed for works
    await storage.put(
      walKey('db1', '000000010000000000000009', sha),
      Readable.from([Buffer.from(await seal('000000010000000000000009', { signer }))]),
    );
    const ok = join(pgdata, 'ok');
    const r = await runCli(
      [
        'wal-fetch',
        '000000010000000000000009',
        ok,
        '--from',
        `file://${join(dir, 'dest')}`,
        '--key',
        keyFile,
        '--database-id',
        'db1',
        '--pgdata',
        pgdata,
        '--prefetch',
        '0',
      ],
      { env: { DBCRATE_TRUST: signer.pubFile } },
    );
    expect(r.code).toBe(0);
    expect(existsSync(ok)).toBe(true);
  });
});
