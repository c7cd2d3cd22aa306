import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { loadDecryptionKey, loadRecipientKey } from '@dbcrate/crypto';
import { openWal, sealWal } from '@dbcrate/pitr';
import {
  pitrServerOf,
  sampleDatabase,
  waitArchived,
  type PgCluster,
  type PitrServer,
} from '@dbcrate/testing';
import { checksums } from './e2e.fixture';
import {
  cleanup,
  cli,
  explain,
  PASSPHRASE,
  preparePitr,
  recover,
  startArchivingCluster,
  walObjects,
  type PitrEnv,
} from './pitr.fixture';

const DB = 'pitr_signing';

/**
 * Signed WAL through a whole recovery (docs/signing.md): a segment replaced in the archive
 * by one encrypted to the organisation key but not signed (same name, same content hash, so
 * every other check passes) stops `recover --latest`; it never ends "successfully" short of
 * the archive's end. The untouched archive recovers everything.
 */
describe('point-in-time recovery: signed WAL', () => {
  let env: PitrEnv;
  let pg: PgCluster;
  let srv: PitrServer;
  let systemId: string;

  beforeAll(async () => {
    env = await preparePitr('signing');
    pg = await startArchivingCluster(env);
    srv = pitrServerOf(pg);
    await pg.createDatabase(DB);
    await sampleDatabase(pg.url(DB), { rows: 200 });
    systemId = await pg.psql('SELECT system_identifier FROM pg_control_system()');
  });

  afterAll(async () => {
    await cleanup(env);
    await pg?.stop();
  });

  it('recover refuses an unsigned WAL segment in the middle of the archive; the genuine archive recovers', async () => {
    const b = await cli(['basebackup', '--db', pg.url(DB), '--to', env.dest, '--recipient', env.keys.pub]);
    expect({ code: b.code, out: explain(b, srv) }).toEqual(expect.objectContaining({ code: 0 }));
    await pg.psql('CREATE TABLE after_backup AS SELECT g FROM generate_series(1, 5000) g', DB);
    const forgedSeg = await waitArchived(srv);
    await pg.psql('CREATE TABLE later AS SELECT g FROM generate_series(1, 5000) g', DB);
    await waitArchived(srv);
    const expected = await checksums(pg.url(DB));

    // A copy of the archive where one segment is re-encrypted without a signature.
    const forgedDir = join(env.root, 'forged-dest');
    execFileSync('cp', ['-a', env.destDir, forgedDir]);
    const obj = walObjects(forgedDir, systemId).find((o) => o.walName === forgedSeg);
    expect(obj).toBeDefined();
    const key = await loadDecryptionKey(fs.readFileSync(env.keys.priv, 'utf8'), PASSPHRASE);
    const plain = await openWal(fs.readFileSync(obj!.file), [key]);
    const recipient = await loadRecipientKey(fs.readFileSync(env.keys.pub, 'utf8'));
    fs.writeFileSync(obj!.file, await sealWal(plain, { recipients: [recipient] }));

    const bad = await recover({ ...env, dest: `file://${forgedDir}` }, pg, 'forged', ['--latest']);
    try {
      expect(bad.result.code).not.toBe(0);
      expect(bad.result.stdout + bad.result.stderr).toMatch(/not trusted|E_UNTRUSTED/);
      expect(bad.result.stdout + bad.result.stderr).toContain(forgedSeg);
    } finally {
      await bad.server.stop().catch(() => undefined);
    }

    const good = await recover(env, pg, 'genuine', ['--latest']);
    try {
      expect({ code: good.result.code, out: explain(good.result, good.server) }).toEqual(
        expect.objectContaining({ code: 0 }),
      );
      expect(await checksums(good.server.url(DB))).toEqual(expected);
    } finally {
      await good.server.stop();
    }
  });
});
