import { ErrorCodes } from '@dbcrate/core';
import { generateKeyPair } from './keys';
import {
  generateSigningKey,
  loadSigningKey,
  loadTrustedKeys,
  signDetached,
  verifyDetached,
  type SigningKey,
  type TrustedKey,
} from './signing';
import { failure } from './crypto.fixture';

jest.setTimeout(60_000);

const data = Buffer.from('{"format":"dbcrate.dump.manifest"}\n');
let signer: SigningKey;
let trusted: TrustedKey[];
let other: TrustedKey[];

beforeAll(async () => {
  const pair = await generateSigningKey({ name: 'host-a', passphrase: 'sign pass' });
  signer = await loadSigningKey(pair.privateArmored, 'sign pass');
  trusted = await loadTrustedKeys([pair.publicArmored]);
  const second = await generateSigningKey({ name: 'host-b' });
  other = await loadTrustedKeys([second.publicArmored]);
});

describe('signing keys', () => {
  it('makes a v4 Ed25519 key that signs, protected by its passphrase', async () => {
    const pair = await generateSigningKey({ name: 'h', passphrase: 'p' });
    expect(pair.privateArmored).toContain('BEGIN PGP PRIVATE KEY BLOCK');
    expect((await failure(loadSigningKey(pair.privateArmored))).code).toBe(ErrorCodes.PASSPHRASE);
    expect((await failure(loadSigningKey(pair.privateArmored, 'wrong'))).code).toBe(ErrorCodes.PASSPHRASE);
    expect((await failure(loadSigningKey(pair.publicArmored))).code).toBe(ErrorCodes.KEY_INVALID);
    expect((await loadSigningKey(pair.privateArmored, 'p')).fingerprint).toBe(pair.fingerprint);
  });

  it('reads signer keys to trust, and refuses what is no key', async () => {
    expect((await failure(loadTrustedKeys(['not a key']))).code).toBe(ErrorCodes.KEY_INVALID);
    const org = await generateKeyPair({ name: 'org' });
    expect((await loadTrustedKeys([org.publicArmored]))[0].fingerprint).toBe(org.fingerprint);
  });

  it('refuses a private key given as a trusted signer key, alone or among public keys', async () => {
    const pair = await generateSigningKey({ name: 'leaked' });
    const e = await failure(loadTrustedKeys([pair.privateArmored]));
    expect(e.code).toBe(ErrorCodes.KEY_INVALID);
    expect(e.message).toMatch(/private key/);
    const both = await failure(loadTrustedKeys([`${pair.publicArmored}\n${pair.privateArmored}`]));
    expect(both.code).toBe(ErrorCodes.KEY_INVALID);
    // several public keys in one file are all trusted
    const two = await generateSigningKey({ name: 'second' });
    const keys = await loadTrustedKeys([`${pair.publicArmored}\n${two.publicArmored}`]);
    expect(keys.map((k) => k.fingerprint)).toEqual([pair.fingerprint, two.fingerprint]);
  });
});

describe('detached signatures', () => {
  it('a trusted signer verifies; the signer is named', async () => {
    const sig = await signDetached(data, signer);
    expect(sig).toContain('BEGIN PGP SIGNATURE');
    expect(await verifyDetached(data, sig, { trusted })).toEqual({
      trusted: true,
      signer: signer.fingerprint,
    });
  });

  it('changed data, another signer, garbage and no signature are untrusted', async () => {
    const sig = await signDetached(data, signer);
    const changed = Buffer.from(data.toString().replace('dump', 'dumq'));
    expect(await verifyDetached(changed, sig, { trusted })).toMatchObject({ trusted: false });
    expect(await verifyDetached(data, sig, { trusted: other })).toMatchObject({ trusted: false });
    expect(await verifyDetached(data, 'garbage', { trusted })).toMatchObject({ trusted: false });
    expect(await verifyDetached(data, undefined, { trusted })).toMatchObject({ trusted: false });
    // --allow-unsigned accepts what has no signature, never a bad one
    expect(await verifyDetached(data, undefined, { trusted, allowUnsigned: true })).toEqual({
      trusted: true,
      unsigned: true,
    });
    expect(await verifyDetached(changed, sig, { trusted, allowUnsigned: true })).toMatchObject({
      trusted: false,
    });
  });
});
