/**
 * The signature check on node:crypto (native-verify.ts), given the decrypted inner packets
 * directly: what it accepts (ours, and gpg's own `gpg --sign`), what it refuses with
 * E_UNTRUSTED (a changed byte, another signer, other notations, no signature, a key that had
 * expired or did not exist yet when the signature was made), and what it leaves to openpgp.js
 * (undefined: an RSA signature, trailing packets, partial lengths).
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createMessage, readPrivateKey, sign } from 'openpgp';
import { ErrorCodes } from '@dbcrate/core';
import { GpgHome, testSigning, type TestSigning } from '@dbcrate/testing';
import { failure, noise } from './crypto.fixture';
import { literalHeader } from './native-encrypt.stream';
import { SignatureWriter, nativeSigner, onePassSignature } from './native-sign';
import { verifyInsideNative } from './native-verify';
import { loadSigningKey, loadTrustedKeys, type SigningKey, type TrustPolicy } from './signing';

jest.setTimeout(60_000);

const notations = { 'binding@dbcrate': 'db-v/000000010000000000000002' };
const what = 'WAL file 000000010000000000000002';

let gpg: GpgHome;
let signer: TestSigning;
let other: TestSigning;

beforeAll(async () => {
  gpg = new GpgHome();
  signer = await testSigning('verify-signer');
  other = await testSigning('verify-other');
});

afterAll(() => {
  gpg.remove();
  for (const s of [signer, other]) rmSync(s.dir, { recursive: true, force: true });
});

/** Inner packets as the native signer writes them (before encryption). */
async function signedInner(
  data: Buffer,
  key: SigningKey = signer.key,
  n: Record<string, string> = notations,
  created?: Date,
): Promise<Buffer> {
  // the key is valid now; the signature may claim another time (what a forger could write)
  const s = (await nativeSigner(key, new Date()))!;
  const sig = new SignatureWriter(s, n, created ?? new Date());
  sig.update(data);
  return Buffer.concat([onePassSignature(s), literalHeader(data.length), data, sig.packet()]);
}

const check = (inner: Buffer, trust: TrustPolicy = signer.trust, n: Record<string, string> = notations) =>
  verifyInsideNative(inner, { trust, notations: n, what });

async function gpgKey(uid: string, algo: string, expire = 'never') {
  const r = await gpg.run(['--passphrase', '', '--quick-gen-key', uid, algo, 'sign', expire]);
  expect(r.code).toBe(0);
  const listed = (await gpg.run(['--with-colons', '--list-keys', uid])).stdout.toString();
  const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(listed)![1];
  const secret = (await gpg.run(['--armor', '--export-secret-keys', fpr])).stdout.toString();
  const pub = (await gpg.run(['--armor', '--export', fpr])).stdout.toString();
  return { fpr, key: await loadSigningKey(secret), trust: { trusted: await loadTrustedKeys([pub]) } };
}

describe('verifyInsideNative', () => {
  it('accepts what the native signer writes and names the signer', async () => {
    const data = noise(200_000, 1);
    const v = await check(await signedInner(data));
    expect(v?.signer).toBe(signer.fingerprint);
    expect(v?.data.equals(data)).toBe(true);
  });

  it('accepts gpg --sign (Ed25519, its own digest) and refuses it with one data byte changed', async () => {
    const g = await gpgKey('verify-gpg <g@example.org>', 'ed25519');
    const data = noise(50_000, 2);
    // from a file: from stdin gpg writes partial lengths, which go to openpgp.js (below)
    const file = join(gpg.dir, 'data.bin');
    writeFileSync(file, data);
    const signArgs = [
      '--compress-algo',
      'none',
      '--set-notation',
      `binding@dbcrate=${notations['binding@dbcrate']}`,
    ];
    const piped = await gpg.run([...signArgs, '--local-user', g.fpr, '--sign'], data);
    expect(await check(piped.stdout, g.trust)).toBeUndefined();
    const r = await gpg.run([...signArgs, '--local-user', g.fpr, '--output', '-', '--sign', file]);
    expect(r.code).toBe(0);
    const v = await check(r.stdout, g.trust);
    expect(v?.signer).toBe(g.fpr);
    expect(v?.data.equals(data)).toBe(true);
    const bad = Buffer.from(r.stdout);
    bad[bad.length - 2000] ^= 1; // inside the literal data
    expect(await failure(check(bad, g.trust))).toMatchObject({
      code: ErrorCodes.UNTRUSTED,
      message: expect.stringMatching(/Signed digest did not match/),
    });
  });

  it('refuses a changed signature, another signer, other notations, and no signature', async () => {
    const data = noise(30_000, 3);
    const inner = await signedInner(data);
    const bad = Buffer.from(inner);
    bad[bad.length - 3] ^= 0x40;
    expect((await failure(check(bad))).code).toBe(ErrorCodes.UNTRUSTED);
    expect(await failure(check(inner, other.trust))).toMatchObject({
      code: ErrorCodes.UNTRUSTED,
      message: expect.stringMatching(/Could not find signing key/),
    });
    expect(
      await failure(check(inner, signer.trust, { 'binding@dbcrate': 'db-v/000000010000000000000003' })),
    ).toMatchObject({ code: ErrorCodes.UNTRUSTED, message: expect.stringMatching(/signed as/) });
    const unsigned = Buffer.concat([literalHeader(data.length), data]);
    expect(await failure(check(unsigned))).toMatchObject({
      code: ErrorCodes.UNTRUSTED,
      message: expect.stringMatching(/no signature/),
    });
    expect((await check(unsigned, { ...signer.trust, allowUnsigned: true }))?.signer).toBeUndefined();
    expect(await failure(check(inner, { trusted: [] }))).toMatchObject({ code: ErrorCodes.UNTRUSTED });
  });

  it('refuses a signature dated after its key expired, or before the key existed', async () => {
    const g = await gpgKey('verify-expiring <e@example.org>', 'ed25519', '1d');
    expect(await nativeSigner(g.key, new Date())).toBeDefined();
    const data = noise(1000, 4);
    expect((await check(await signedInner(data, g.key), g.trust))?.signer).toBe(g.fpr);
    const later = new Date(Date.now() + 3 * 86_400_000);
    expect((await failure(check(await signedInner(data, g.key, notations, later), g.trust))).code).toBe(
      ErrorCodes.UNTRUSTED,
    );
    const before = new Date(Date.now() - 10 * 86_400_000);
    expect(await failure(check(await signedInner(data, g.key, notations, before), g.trust))).toMatchObject({
      code: ErrorCodes.UNTRUSTED,
    });
  });

  it('leaves an RSA signature and a message with a trailing packet to openpgp.js (undefined)', async () => {
    const g = await gpgKey('verify-rsa <r@example.org>', 'rsa2048');
    const data = Buffer.from('wal bytes');
    const rsa = Buffer.from(
      await sign({
        message: await createMessage({ binary: data, format: 'binary' }),
        signingKeys: await readPrivateKey({ armoredKey: g.key.armored }),
        format: 'binary',
      }),
    );
    expect(await check(rsa, g.trust, {})).toBeUndefined();
    const trailing = Buffer.concat([await signedInner(data), literalHeader(1), Buffer.from('x')]);
    expect(await check(trailing)).toBeUndefined();
  });
});
