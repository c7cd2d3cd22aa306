/**
 * timelines/<TLI>.json is a plaintext, unsigned summary. Anyone who can write to the bucket
 * could rewrite it (move a fork point past the parent's end) and so hide two live branches
 * from the planner, while PostgreSQL follows the signed .history file onto the other branch
 * and recover --latest exits 0 with that branch's data. The planner reads the signed
 * .history files instead, and refuses an unsigned one.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, utimesSync } from 'node:fs';
import { rm } from 'node:fs/promises';
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
import { removeTestSigning, testSigning, type TestSigning } from '@dbcrate/testing';
import type { BaseManifest } from './base.manifest';
import { timelineKey, walKey } from './pitr.layout';
import { planFromIndex } from './recover';
import { useSignedHistories } from './recover.histories';
import { sealWal } from './wal.archive';
import { DEFAULT_WAL_SEGMENT_SIZE } from './wal.names';
import { indexArchive } from './windows';

const DB = 'histdb';
const seg = (tli: number, n: number) =>
  `${tli.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;
const BACKUP = {
  backupId: '20261125T110000.000Z',
  timeline: 1,
  startLsn: '0/2000028',
  stopLsn: '0/2000100',
  startWalFile: seg(1, 2),
  stopWalFile: seg(1, 2),
  finishedAt: '2026-11-25T11:00:05.000Z',
  walSegmentSize: DEFAULT_WAL_SEGMENT_SIZE,
  databaseId: DB,
} as BaseManifest;

describe('recover plans on the signed .history files, not the unsigned timeline summaries', () => {
  let dir: string;
  let storage: Storage;
  let recipient: RecipientKey;
  let key: DecryptionKey;
  let signer: TestSigning;
  let t = Date.UTC(2026, 10, 25, 12, 0, 0) / 1000;

  const putAt = async (k: string, body: Uint8Array | string) => {
    await storage.put(k, Readable.from([Buffer.from(body)]));
    t += 60;
    utimesSync(join(dir, 'dest', k), t, t);
  };
  const putWal = async (walFile: string, plain: Buffer, signed = true) =>
    putAt(
      walKey(DB, walFile, createHash('sha256').update(plain).digest('hex')),
      await sealWal(
        plain,
        { recipients: [recipient], databaseId: DB, ...(signed ? { signingKey: signer.key } : {}) },
        walFile,
      ),
    );
  const forgedSummary = (tli: number, switchLsn: string) =>
    putAt(
      timelineKey(DB, tli),
      JSON.stringify({
        format: 'dbcrate.timeline',
        formatVersion: 1,
        timeline: tli,
        history: [{ timeline: tli - 1, switchLsn }],
      }) + '\n',
    );

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-hist-'));
    storage = await openStorage(`file://${join(dir, 'dest')}`);
    const pair = await generateKeyPair({ name: 'hist test' });
    recipient = await loadRecipientKey(pair.publicArmored);
    key = await loadDecryptionKey(pair.privateArmored);
    signer = await testSigning('hist-signer');
    // Timeline 1 up to segment 5, where timeline 2 forks (a promoted copy), then both grow.
    for (let n = 2; n <= 5; n++) await putWal(seg(1, n), Buffer.alloc(1024, n));
    await putWal('00000002.history', Buffer.from('1\t0/5000000\tno recovery target specified\n'));
    for (let n = 5; n <= 7; n++) await putWal(seg(2, n), Buffer.alloc(1024, 0x20 + n));
    for (let n = 6; n <= 9; n++) await putWal(seg(1, n), Buffer.alloc(1024, 0x10 + n));
    // The attacker's summary: timeline 2 forked after all of timeline 1's WAL.
    await forgedSummary(2, '0/90000000');
  });
  afterAll(async () => {
    await storage?.close();
    if (signer) removeTestSigning(signer);
    await rm(dir, { recursive: true, force: true });
  });

  const plan = async (verify: boolean) => {
    const index = await indexArchive(storage, DB);
    if (verify)
      await useSignedHistories(index, { storage, databaseId: DB, keys: [key], trust: signer.trust });
    return planFromIndex(index, [BACKUP], {
      databaseId: DB,
      target: { kind: 'latest' },
      timeline: 'latest',
    });
  };

  it('the forged summary alone hides the live branch (what the planner saw before)', async () => {
    expect((await plan(false)).timeline).toBe(2);
  });

  it('with the signed .history file, --timeline latest is refused: two live branches', async () => {
    const e = await plan(true).catch((err: unknown) => err as DbcrateError);
    expect(e).toBeInstanceOf(DbcrateError);
    expect((e as DbcrateError).code).toBe(ErrorCodes.TIMELINE_BRANCHES);
    expect((e as DbcrateError).message).toContain('forked from timeline 1 at 0/5000000');
  });

  it('an unsigned .history file is refused before anything is downloaded', async () => {
    await putWal('00000003.history', Buffer.from('1\t0/5000000\tx\n2\t0/7000000\tx\n'), false);
    const e = await plan(true).catch((err: unknown) => err as DbcrateError);
    expect((e as DbcrateError).code).toBe(ErrorCodes.UNTRUSTED);
    expect((e as DbcrateError).message).toContain('00000003.history');
  });
});
