/**
 * Both OpenPGP implementations (native node:crypto, openpgp.js) against the machine's
 * GnuPG: sizes around the partial-length chunk, gpg's ciphers and compression, several
 * recipients (RSA 3072, Curve25519 from us and from gpg), tampering and truncation,
 * signed WAL-style buffers, and one multi-GiB stream in each direction.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCodes } from '@dbcrate/core';
import { GpgHome, testSigning, type TestSigning } from '@dbcrate/testing';
import type { DecryptionKey, RecipientKey } from './cipher';
import { getCipher } from './crypto.registry';
import { generateKeyPair, loadDecryptionKey, loadRecipientKey } from './keys';
import { failure, noise, sha256, through } from './crypto.fixture';

jest.setTimeout(120_000);

const IMPLEMENTATIONS = ['native', 'openpgpjs'] as const;
const MiB = 1024 * 1024;
/** The native writer's partial chunk (2^20); sizes around it exercise the framing. */
const CHUNK = MiB;
/** The streamed case (DBCRATE_INTEROP_BIG_MIB=2048 for 2 GiB; 0 skips it). */
const BIG_MIB = Number(process.env.DBCRATE_INTEROP_BIG_MIB ?? 1024);

let gpg: GpgHome;
let ours: RecipientKey;
let oursK: DecryptionKey;
let gpgCv: { fpr: string; r: RecipientKey; k: DecryptionKey };
let gpgRsa: { fpr: string; r: RecipientKey; k: DecryptionKey };
let signer: TestSigning;
let other: TestSigning;

async function gpgOk(args: string[], input?: Buffer): Promise<{ stdout: Buffer; stderr: string }> {
  const r = await gpg.run(['--status-fd', '2', '--trust-model', 'always', ...args], input);
  if (r.code !== 0) throw new Error(`gpg ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
  return r;
}

async function gpgKey(uid: string, algo: 'rsa3072' | 'future-default'): Promise<typeof gpgCv> {
  if (algo === 'future-default') {
    await gpgOk(['--passphrase', '', '--quick-gen-key', uid, 'future-default', 'default', 'never']);
  } else {
    await gpgOk(['--passphrase', '', '--quick-gen-key', uid, 'rsa3072', 'sign,cert', 'never']);
  }
  const list = (await gpgOk(['--with-colons', '--list-keys', uid])).stdout.toString();
  const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(list)![1];
  if (algo === 'rsa3072')
    await gpgOk(['--passphrase', '', '--quick-add-key', fpr, 'rsa3072', 'encr', 'never']);
  const pub = (await gpgOk(['--export', fpr])).stdout;
  const sec = (await gpgOk(['--passphrase', '', '--export-secret-keys', fpr])).stdout;
  return { fpr, r: await loadRecipientKey(pub), k: await loadDecryptionKey(sec) };
}

beforeAll(async () => {
  gpg = new GpgHome();
  const pair = await generateKeyPair({ name: 'interop org' });
  ours = await loadRecipientKey(pair.publicArmored);
  oursK = await loadDecryptionKey(pair.privateArmored);
  await gpg.import(pair.privateArmored);
  gpgCv = await gpgKey('gpg cv25519 <cv@org.example>', 'future-default');
  gpgRsa = await gpgKey('gpg rsa <rsa@org.example>', 'rsa3072');
  signer = await testSigning('interop-signer');
  other = await testSigning('interop-other');
  await gpg.import(signer.trust.trusted[0].armored);
});

afterAll(async () => {
  spawn('gpgconf', ['--homedir', gpg.dir, '--kill', 'gpg-agent']).on('error', () => undefined);
  gpg.remove();
  for (const s of [signer, other]) rmSync(s.dir, { recursive: true, force: true });
});

const SIZES: [string, number][] = [
  ['empty', 0],
  ['1 byte', 1],
  ['the literal body exactly one chunk', CHUNK - 6],
  ['chunk - 1', CHUNK - 1],
  ['exactly one chunk', CHUNK],
  ['chunk + 1', CHUNK + 1],
  ['several chunks', 3 * CHUNK + 12_345],
  ['a few MiB', 5 * MiB + 3],
];

describe.each(IMPLEMENTATIONS)('%s with gpg', (implementation) => {
  const cipher = getCipher('openpgp', { implementation });

  it.each(SIZES)('gpg --decrypt reads our stream: %s', async (_l, size) => {
    const data = noise(size, size + 11);
    const ct = await through(data, cipher.encryptor([ours]));
    const r = await gpgOk(['--decrypt'], ct);
    expect(sha256(r.stdout)).toBe(sha256(data));
    expect(r.stderr).toMatch(/\[GNUPG:\] GOODMDC/);
    expect(r.stderr).toMatch(/\[GNUPG:\] DECRYPTION_INFO 2 9/);
  });

  it.each(SIZES)('gpg --decrypt reads our buffer: %s', async (_l, size) => {
    const data = noise(size, size + 13);
    const r = await gpgOk(['--decrypt'], Buffer.from(await cipher.encryptBuffer(data, [ours])));
    expect(sha256(r.stdout)).toBe(sha256(data));
    expect(r.stderr).toMatch(/\[GNUPG:\] GOODMDC/);
  });

  const GPG_MODES: [string, string[]][] = [
    ['AES256, no compression', ['--cipher-algo', 'AES256', '--compress-algo', 'none']],
    ['AES128, no compression', ['--cipher-algo', 'AES128', '--compress-algo', 'none']],
    ['AES256, default compression', ['--cipher-algo', 'AES256']],
    ['AES128, ZIP', ['--cipher-algo', 'AES128', '--compress-algo', 'zip']],
  ];
  describe.each(GPG_MODES)('we read gpg --encrypt (%s)', (_m, mode) => {
    it.each(SIZES)('%s', async (_l, size) => {
      const data =
        size > 2 * MiB
          ? Buffer.concat([noise(size >> 1, 3), Buffer.alloc(size - (size >> 1), 'a')])
          : noise(size, size + 17);
      const ct = (await gpgOk([...mode, '--encrypt', '-r', ours.fingerprint], data)).stdout;
      expect(sha256(await through(ct, cipher.decryptor([oursK])))).toBe(sha256(data));
      expect(sha256(Buffer.from(await cipher.decryptBuffer(ct, [oursK])))).toBe(sha256(data));
    });
  });

  it('three recipients (ours, gpg cv25519, gpg RSA 3072): each key opens it, here and in gpg', async () => {
    const data = noise(2 * MiB + 77, 5);
    const ct = await through(data, cipher.encryptor([ours, gpgCv.r, gpgRsa.r]));
    for (const k of [oursK, gpgCv.k, gpgRsa.k]) {
      expect(sha256(await through(ct, cipher.decryptor([k])))).toBe(sha256(data));
    }
    expect(sha256((await gpgOk(['--decrypt'], ct)).stdout)).toBe(sha256(data));
    const byGpg = (
      await gpgOk(['--encrypt', '-r', gpgRsa.fpr, '-r', gpgCv.fpr, '-r', ours.fingerprint], data)
    ).stdout;
    for (const k of [oursK, gpgCv.k, gpgRsa.k]) {
      expect(sha256(await through(byGpg, cipher.decryptor([k])))).toBe(sha256(data));
    }
  });

  it('refuses gpg output that was tampered with or truncated (E_INTEGRITY)', async () => {
    for (const mode of [['--compress-algo', 'none'], []]) {
      const data = Buffer.concat([noise(300_000, 8), Buffer.alloc(300_000, 'z')]);
      const ct = (await gpgOk([...mode, '--encrypt', '-r', ours.fingerprint], data)).stdout;
      for (const at of [ct.length >> 1, ct.length - 10, ct.length - 1]) {
        const bad = Buffer.from(ct);
        bad[at] ^= 0x04;
        expect((await failure(through(bad, cipher.decryptor([oursK])))).code).toBe(ErrorCodes.INTEGRITY);
        expect((await failure(cipher.decryptBuffer(bad, [oursK]))).code).toBe(ErrorCodes.INTEGRITY);
      }
      for (const cut of [300, ct.length >> 1, ct.length - 22, ct.length - 1]) {
        const f = await failure(through(ct.subarray(0, cut), cipher.decryptor([oursK])));
        expect(f.code).toBe(ErrorCodes.INTEGRITY);
      }
      const trailing = Buffer.concat([ct, Buffer.from([0xcb, 0x01, 0x62])]);
      expect((await failure(through(trailing, cipher.decryptor([oursK])))).code).toBe(ErrorCodes.INTEGRITY);
    }
  });

  it('refuses our own output with a flipped byte in the body or the MDC, or cut short', async () => {
    const ct = await through(noise(3 * CHUNK, 2), cipher.encryptor([ours]));
    for (const at of [400, CHUNK, ct.length - 30, ct.length - 15, ct.length - 1]) {
      const bad = Buffer.from(ct);
      bad[at] ^= 0x10;
      expect((await failure(through(bad, cipher.decryptor([oursK])))).code).toBe(ErrorCodes.INTEGRITY);
      expect((await gpg.run(['--decrypt'], bad)).code).not.toBe(0);
    }
    for (const cut of [200, CHUNK + 3, ct.length - 22, ct.length - 1]) {
      expect((await failure(through(ct.subarray(0, cut), cipher.decryptor([oursK])))).code).toBe(
        ErrorCodes.INTEGRITY,
      );
    }
  });

  describe('signed WAL-style buffers', () => {
    const notations = { 'binding@dbcrate': 'db-1234/000000010000000000000003' };
    const verify = (trust: TestSigning['trust'], n: Record<string, string> = notations) => ({
      trust,
      notations: n,
      what: 'WAL file 000000010000000000000003',
    });

    it('gpg says Good signature and shows the notation; our verify accepts it', async () => {
      const data = noise(700_000, 4);
      const sealed = await cipher.encryptBuffer(data, [ours], { signingKey: signer.key, notations });
      const r = await gpgOk(['--decrypt'], Buffer.from(sealed));
      expect(sha256(r.stdout)).toBe(sha256(data));
      expect(r.stderr).toMatch(/Good signature from "interop-signer"/);
      expect(r.stderr).toMatch(/\[GNUPG:\] NOTATION_NAME binding@dbcrate/);
      expect(r.stderr).toContain('db-1234/000000010000000000000003');
      for (const reader of IMPLEMENTATIONS) {
        const out = await getCipher('openpgp', { implementation: reader }).decryptBuffer(sealed, [oursK], {
          verify: verify(signer.trust),
        });
        expect(sha256(Buffer.from(out))).toBe(sha256(data));
      }
    });

    it('refuses a wrong signer, another notation, or no signature (E_UNTRUSTED)', async () => {
      const data = Buffer.from('wal bytes');
      const sealed = await cipher.encryptBuffer(data, [ours], { signingKey: signer.key, notations });
      const wrongSigner = await failure(
        cipher.decryptBuffer(sealed, [oursK], { verify: verify(other.trust) }),
      );
      expect(wrongSigner.code).toBe(ErrorCodes.UNTRUSTED);
      const moved = await failure(
        cipher.decryptBuffer(sealed, [oursK], {
          verify: verify(signer.trust, { 'binding@dbcrate': 'db-1234/000000010000000000000004' }),
        }),
      );
      expect(moved).toMatchObject({
        code: ErrorCodes.UNTRUSTED,
        message: expect.stringMatching(/signed as/),
      });
      const noNotation = await cipher.encryptBuffer(data, [ours], { signingKey: signer.key });
      expect(
        (await failure(cipher.decryptBuffer(noNotation, [oursK], { verify: verify(signer.trust) }))).code,
      ).toBe(ErrorCodes.UNTRUSTED);
      const unsigned = await cipher.encryptBuffer(data, [ours]);
      expect(
        (await failure(cipher.decryptBuffer(unsigned, [oursK], { verify: verify(signer.trust) }))).code,
      ).toBe(ErrorCodes.UNTRUSTED);
      // tampering still wins over the signature check
      const bad = Buffer.from(sealed);
      bad[bad.length - 2] ^= 1;
      expect((await failure(cipher.decryptBuffer(bad, [oursK], { verify: verify(signer.trust) }))).code).toBe(
        ErrorCodes.INTEGRITY,
      );
    });
  });
});

/** The same 1 MiB random block `blocks` times, hashed as it goes out. */
function repeated(blocks: number, hash: ReturnType<typeof createHash>): Readable {
  const block = noise(MiB, 99);
  let i = 0;
  return new Readable({
    highWaterMark: 4 * MiB,
    read() {
      if (i++ === blocks) {
        this.push(null);
        return;
      }
      hash.update(block);
      this.push(block);
    },
  });
}

function hashing(hash: ReturnType<typeof createHash>): Writable {
  return new Writable({
    highWaterMark: 4 * MiB,
    write(chunk: Buffer, _e, cb) {
      hash.update(chunk);
      cb();
    },
  });
}

/** gpg in the test home, fed from `input`, writing to `output`, all streamed. */
async function gpgPipe(args: string[], input: Readable, output: Writable): Promise<void> {
  const child = spawn(
    'gpg',
    [
      '--homedir',
      gpg.dir,
      '--batch',
      '--no-tty',
      '--pinentry-mode',
      'loopback',
      '--trust-model',
      'always',
      ...args,
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  await Promise.all([pipeline(input, child.stdin), pipeline(child.stdout, output)]);
  const code = await exited;
  if (code !== 0) throw new Error(`gpg ${args.join(' ')} exited ${code}: ${stderr}`);
}

const big = BIG_MIB > 0 ? describe : describe.skip;
big(`${BIG_MIB} MiB streamed through gpg (native)`, () => {
  const cipher = getCipher('openpgp', { implementation: 'native' });
  jest.setTimeout(600_000);

  it('we encrypt, gpg --decrypt', async () => {
    const sent = createHash('sha256');
    const got = createHash('sha256');
    const enc = cipher.encryptor([ours]);
    await Promise.all([
      pipeline(repeated(BIG_MIB, sent), enc).catch((e: unknown) => enc.destroy(e as Error)),
      gpgPipe(['--decrypt'], enc, hashing(got)),
    ]);
    expect(got.digest('hex')).toBe(sent.digest('hex'));
  });

  it('gpg --encrypt, we decrypt', async () => {
    const sent = createHash('sha256');
    const got = createHash('sha256');
    const dec = cipher.decryptor([oursK]);
    const done = pipeline(dec, hashing(got));
    await gpgPipe(
      ['--compress-algo', 'none', '--encrypt', '-r', ours.fingerprint],
      repeated(BIG_MIB, sent),
      dec,
    );
    await done;
    expect(got.digest('hex')).toBe(sent.digest('hex'));
  });
});
