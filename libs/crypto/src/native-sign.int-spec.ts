/**
 * Signatures made on node:crypto inside the encryption (native-sign.ts), against the
 * machine's GnuPG and both of our readers: sizes around the slice the hash is fed in, a
 * gpg-made key whose signing key is a subkey, an RSA signing key (signed by openpgp.js
 * instead), and signatures that must not pass: a changed byte in the signature, and a
 * signature over other data.
 */
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { encryptSessionKey, readKey } from 'openpgp';
import { ErrorCodes } from '@dbcrate/core';
import { GpgHome, testSigning, type TestSigning } from '@dbcrate/testing';
import type { DecryptionKey, RecipientKey } from './cipher';
import { getCipher } from './crypto.registry';
import { failure, noise, sha256 } from './crypto.fixture';
import { generateKeyPair, loadDecryptionKey, loadRecipientKey } from './keys';
import { literalHeader, sealBuffer } from './native-encrypt.stream';
import { SignatureWriter, nativeSigner, onePassSignature } from './native-sign';
import { loadSigningKey, loadTrustedKeys, type SigningKey, type TrustPolicy } from './signing';

jest.setTimeout(120_000);

const SLICE = 64 * 1024;
const notations = { 'binding@dbcrate': 'db-9/000000010000000000000007' };
const what = 'WAL file 000000010000000000000007';

let gpg: GpgHome;
let ours: RecipientKey;
let oursK: DecryptionKey;
let pubArmored: string;
let signer: TestSigning;

async function gpgRun(args: string[], input?: Buffer) {
  return gpg.run(['--status-fd', '2', '--trust-model', 'always', ...args], input);
}

/** A key made by gpg: `spec` is the primary's algorithm and usage, `sub` an optional signing subkey. */
async function gpgSigningKey(
  uid: string,
  primary: [string, string],
  sub?: string,
): Promise<{ key: SigningKey; trust: TrustPolicy; primary: string }> {
  expect((await gpg.run(['--passphrase', '', '--quick-gen-key', uid, ...primary, 'never'])).code).toBe(0);
  const listed = (await gpg.run(['--with-colons', '--list-keys', uid])).stdout.toString();
  const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(listed)![1];
  if (sub)
    expect((await gpg.run(['--passphrase', '', '--quick-add-key', fpr, sub, 'sign', 'never'])).code).toBe(0);
  const secret = (await gpg.run(['--armor', '--export-secret-keys', fpr])).stdout.toString();
  const pub = (await gpg.run(['--armor', '--export', fpr])).stdout.toString();
  return {
    key: await loadSigningKey(secret),
    trust: { trusted: await loadTrustedKeys([pub]) },
    primary: fpr,
  };
}

beforeAll(async () => {
  gpg = new GpgHome();
  const pair = await generateKeyPair({ name: 'native-sign org' });
  pubArmored = pair.publicArmored;
  ours = await loadRecipientKey(pair.publicArmored);
  oursK = await loadDecryptionKey(pair.privateArmored);
  await gpg.import(pair.privateArmored);
  signer = await testSigning('native-signer');
  await gpg.import(signer.publicArmored);
});

afterAll(() => {
  gpg.remove();
  rmSync(signer.dir, { recursive: true, force: true });
});

const readers = ['native', 'openpgpjs'] as const;

async function acceptedByAll(sealed: Uint8Array, data: Buffer, trust: TrustPolicy): Promise<string> {
  const r = await gpgRun(['--decrypt'], Buffer.from(sealed));
  expect(r.code).toBe(0);
  expect(sha256(r.stdout)).toBe(sha256(data));
  expect(r.stderr).toMatch(/\[GNUPG:\] GOODSIG /);
  expect(r.stderr).toMatch(/\[GNUPG:\] GOODMDC/);
  expect(r.stderr).toContain('[GNUPG:] NOTATION_DATA db-9/000000010000000000000007');
  for (const reader of readers) {
    const out = await getCipher('openpgp', { implementation: reader }).decryptBuffer(sealed, [oursK], {
      verify: { trust, notations, what },
    });
    expect(sha256(Buffer.from(out))).toBe(sha256(data));
  }
  return r.stderr;
}

describe('signed inside on node:crypto (Ed25519, SHA-256)', () => {
  const cipher = getCipher('openpgp', { implementation: 'native' });

  it.each([
    ['empty', 0],
    ['1 byte', 1],
    ['slice - 1', SLICE - 1],
    ['exactly one slice', SLICE],
    ['slice + 1', SLICE + 1],
    ['several slices', 3 * SLICE + 5],
    ['a few MiB', 3 * 1024 * 1024 + 17],
  ])('gpg and both readers accept it: %s', async (_l, size) => {
    const data = noise(size, size + 3);
    const sealed = await cipher.encryptBuffer(data, [ours], { signingKey: signer.key, notations });
    const status = await acceptedByAll(sealed, data, signer.trust);
    // VALIDSIG … <pubkey algo> <hash algo>: legacy EdDSA (22) over SHA-256 (8), i.e. the native signer
    expect(status).toMatch(new RegExp(`\\[GNUPG:\\] VALIDSIG ${signer.fingerprint} .* 0 4 0 22 8 00 `));
  });

  it('a gpg key whose signing key is an Ed25519 subkey: signed by the subkey, which gpg names with its primary', async () => {
    const g = await gpgSigningKey('native-sub <sub@example.org>', ['ed25519', 'cert'], 'ed25519');
    const s = await nativeSigner(g.key, new Date());
    expect(s).toBeDefined();
    expect(s!.fingerprint.toString('hex').toUpperCase()).not.toBe(g.primary);
    const data = noise(100_000, 5);
    const sealed = await cipher.encryptBuffer(data, [ours], { signingKey: g.key, notations });
    const status = await acceptedByAll(sealed, data, g.trust);
    expect(status).toContain(`[GNUPG:] VALIDSIG ${s!.fingerprint.toString('hex').toUpperCase()} `);
    expect(status).toMatch(new RegExp(` 22 8 00 ${g.primary}`));
  });

  it('a signing key that has expired signs nothing (as openpgp.js refuses it), so no unrestorable WAL is archived', async () => {
    const uid = 'native-expired <x@example.org>';
    const made = await gpg.run([
      ...['--faked-system-time', '20200101T000000', '--passphrase', ''],
      ...['--quick-gen-key', uid, 'ed25519', 'sign', '1d'],
    ]);
    expect(made.code).toBe(0);
    const secret = (await gpg.run(['--armor', '--export-secret-keys', uid])).stdout.toString();
    const key = await loadSigningKey(secret);
    await expect(nativeSigner(key, new Date())).rejects.toThrow(/expired/i);
    const e = await failure(cipher.encryptBuffer(Buffer.from('wal'), [ours], { signingKey: key, notations }));
    expect(e.code).toBe(ErrorCodes.KEY_INVALID);
    expect(e.message).toMatch(/expired/i);
    // the same key signed fine while it was valid
    expect(await nativeSigner(key, new Date('2020-01-01T12:00:00Z'))).toBeDefined();
  });

  it('an RSA signing key is not signed natively: openpgp.js signs it, and gpg and both readers accept it', async () => {
    const g = await gpgSigningKey('native-rsa <rsa@example.org>', ['rsa3072', 'sign,cert']);
    expect(await nativeSigner(g.key, new Date())).toBeUndefined();
    const data = noise(70_000, 6);
    const sealed = await cipher.encryptBuffer(data, [ours], { signingKey: g.key, notations });
    const status = await acceptedByAll(sealed, data, g.trust);
    expect(status).toMatch(new RegExp(`\\[GNUPG:\\] VALIDSIG ${g.primary} .* 0 4 0 1 `));
  });

  /** A message built by hand with the native pieces, its signature packet changed by `mangle`. */
  async function handMade(
    data: Buffer,
    signedData: Buffer,
    mangle: (sig: Buffer) => Buffer = (b) => b,
  ): Promise<Buffer> {
    const s = (await nativeSigner(signer.key, new Date()))!;
    const sessionKey = randomBytes(32);
    const pkesks = Buffer.from(
      await encryptSessionKey({
        data: sessionKey,
        algorithm: 'aes256',
        encryptionKeys: await readKey({ armoredKey: pubArmored }),
        format: 'binary',
      }),
    );
    const sig = new SignatureWriter(s, notations, new Date());
    sig.update(signedData);
    const packet = mangle(sig.packet());
    return sealBuffer(pkesks, sessionKey, (write) => {
      write(onePassSignature(s));
      write(literalHeader(data.length));
      write(data);
      write(packet);
    });
  }

  it('the hand-made message with nothing changed is accepted (the control for the two below)', async () => {
    const data = noise(10_000, 7);
    await acceptedByAll(await handMade(data, data), data, signer.trust);
  });

  it('a changed byte in the signature value is refused by gpg and both readers (E_UNTRUSTED)', async () => {
    const data = noise(10_000, 8);
    const sealed = await handMade(data, data, (p) => {
      const b = Buffer.from(p);
      b[b.length - 5] ^= 0x01; // inside S
      return b;
    });
    const r = await gpgRun(['--decrypt'], sealed);
    expect(r.stderr).not.toMatch(/\[GNUPG:\] GOODSIG /);
    expect(r.stderr).toMatch(/\[GNUPG:\] (BADSIG|ERRSIG) /);
    for (const reader of readers) {
      const e = await failure(
        getCipher('openpgp', { implementation: reader }).decryptBuffer(sealed, [oursK], {
          verify: { trust: signer.trust, notations, what },
        }),
      );
      expect(e.code).toBe(ErrorCodes.UNTRUSTED);
    }
  });

  it('a signature over other data than the literal packet holds is refused (E_UNTRUSTED)', async () => {
    const data = noise(10_000, 9);
    const other = Buffer.from(data);
    other[123] ^= 0xff;
    const sealed = await handMade(data, other);
    const r = await gpgRun(['--decrypt'], sealed);
    expect(r.stderr).toMatch(/\[GNUPG:\] BADSIG /);
    for (const reader of readers) {
      const e = await failure(
        getCipher('openpgp', { implementation: reader }).decryptBuffer(sealed, [oursK], {
          verify: { trust: signer.trust, notations, what },
        }),
      );
      expect(e.code).toBe(ErrorCodes.UNTRUSTED);
    }
  });
});
