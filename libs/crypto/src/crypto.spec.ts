import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { generateKey, readMessage, decryptSessionKeys, readKey, type PrivateKey } from 'openpgp';
import { ErrorCodes, redact } from '@dbcrate/core';
import type { DecryptionKey, RecipientKey } from './cipher';
import { getCipher, getCipherByExtension } from './crypto.registry';
import { generateKeyPair, loadDecryptionKey, loadRecipientKey, type GeneratedKeyPair } from './keys';
import { recipientKeyIds } from './pgp-header.parser';
import { chunked, through as pipeThrough } from '@dbcrate/testing';
import { failure, noise, sha256, through } from './crypto.fixture';

jest.setTimeout(60_000);

const PASSPHRASE = 'correct horse battery staple';
const IMPLEMENTATIONS = ['native', 'openpgpjs'] as const;
const cipher = getCipher('openpgp');

let alice: GeneratedKeyPair;
let bob: GeneratedKeyPair;
let aliceR: RecipientKey;
let bobR: RecipientKey;
let aliceK: DecryptionKey;
let bobK: DecryptionKey;

beforeAll(async () => {
  alice = await generateKeyPair({ name: 'Org Alice', email: 'ops@alice.example', passphrase: PASSPHRASE });
  bob = await generateKeyPair({ name: 'Org Bob' });
  aliceR = await loadRecipientKey(alice.publicArmored);
  bobR = await loadRecipientKey(bob.publicArmored);
  aliceK = await loadDecryptionKey(alice.privateArmored, PASSPHRASE);
  bobK = await loadDecryptionKey(bob.privateArmored);
});

describe('keys', () => {
  it('generates v4 Curve25519 keys with an upper-case fingerprint', async () => {
    expect(alice.fingerprint).toMatch(/^[0-9A-F]{40}$/);
    expect(alice.publicArmored).toContain('-----BEGIN PGP PUBLIC KEY BLOCK-----');
    expect(alice.privateArmored).toContain('-----BEGIN PGP PRIVATE KEY BLOCK-----');
    const key = await readKey({ armoredKey: alice.publicArmored });
    expect(key.keyPacket.version).toBe(4);
    expect(key.getAlgorithmInfo()).toMatchObject({ algorithm: 'eddsaLegacy', curve: 'ed25519Legacy' });
    expect(key.subkeys[0].getAlgorithmInfo()).toMatchObject({ algorithm: 'ecdh', curve: 'curve25519Legacy' });
    expect(await key.getExpirationTime()).toBe(Infinity);
  });

  it('generates RSA-4096 keys when asked', async () => {
    const rsa = await generateKeyPair({ name: 'Org RSA', algorithm: 'rsa4096' });
    const key = await readKey({ armoredKey: rsa.publicArmored });
    expect(key.keyPacket.version).toBe(4);
    expect(key.getAlgorithmInfo()).toMatchObject({ algorithm: 'rsaEncryptSign', bits: 4096 });
    const r = await loadRecipientKey(rsa.publicArmored);
    const k = await loadDecryptionKey(rsa.privateArmored);
    const ct = await through(Buffer.from('rsa'), cipher.encryptor([r]));
    expect((await through(ct, cipher.decryptor([k]))).toString()).toBe('rsa');
  });

  it('describes a recipient: fingerprint, encryption subkey, user id', () => {
    expect(aliceR.fingerprint).toBe(alice.fingerprint);
    expect(aliceR.encryptionKeyIds).toHaveLength(1);
    expect(aliceR.encryptionKeyIds[0]).toMatch(/^[0-9A-F]{40}$/);
    expect(aliceR.encryptionKeyIds[0]).not.toBe(alice.fingerprint);
    expect(aliceR.userIds).toEqual(['Org Alice <ops@alice.example>']);
    expect(aliceK.fingerprint).toBe(alice.fingerprint);
    expect(aliceK.keyIds).toContain(aliceR.encryptionKeyIds[0].slice(-16));
  });

  it('reads binary keys as well as armored ones', async () => {
    const binary = (await readKey({ armoredKey: bob.publicArmored })).write();
    expect((await loadRecipientKey(binary)).fingerprint).toBe(bob.fingerprint);
  });

  it('registers the passphrase as a secret', () => {
    expect(redact(`oops: ${PASSPHRASE} leaked`)).toBe('oops: *** leaked');
  });

  it('says the clock is behind when a key was created after "now" (not "expired or revoked")', async () => {
    const future = await generateKey({
      type: 'ecc',
      curve: 'curve25519Legacy',
      userIDs: [{ name: 'Made tomorrow' }],
      date: new Date(Date.now() + 86_400_000),
      format: 'armored',
    });
    const e = await failure(loadRecipientKey(future.publicKey));
    expect(e.code).toBe(ErrorCodes.KEY_INVALID);
    expect(e.message).toContain("after this machine's clock");
    expect(e.hint).toContain('clock is behind');
  });

  it('refuses a private key as recipient', async () => {
    const f = await failure(loadRecipientKey(bob.privateArmored));
    expect(f.code).toBe(ErrorCodes.KEY_INVALID);
    expect(f.message).toMatch(/private key/);
    expect(f.hint).toMatch(/gpg --export --armor/);
  });

  it('refuses a public key as decryption key', async () => {
    expect((await failure(loadDecryptionKey(bob.publicArmored))).code).toBe(ErrorCodes.KEY_INVALID);
  });

  it('refuses two keys in one file (one armor block or two)', async () => {
    const f = await failure(loadRecipientKey(`${alice.publicArmored}\n${bob.publicArmored}`));
    expect(f).toMatchObject({ code: ErrorCodes.KEY_INVALID, message: expect.stringMatching(/2 keys/) });
    const both = Buffer.concat([
      (await readKey({ armoredKey: alice.publicArmored })).write(),
      (await readKey({ armoredKey: bob.publicArmored })).write(),
    ]);
    const g = await failure(loadRecipientKey(both));
    expect(g).toMatchObject({ code: ErrorCodes.KEY_INVALID, message: expect.stringMatching(/holds 2 keys/) });
  });

  it('rejects garbage with E_KEY_INVALID', async () => {
    expect((await failure(loadRecipientKey('not a key'))).code).toBe(ErrorCodes.KEY_INVALID);
    expect((await failure(loadDecryptionKey(new Uint8Array([1, 2, 3, 4])))).code).toBe(
      ErrorCodes.KEY_INVALID,
    );
    const lines = alice.publicArmored.split('\n');
    const cut = [...lines.slice(0, 4), ...lines.slice(-2)].join('\n'); // armor with most of the body gone
    expect((await failure(loadRecipientKey(cut))).code).toBe(ErrorCodes.KEY_INVALID);
  });

  it('asks for a passphrase, naming --passphrase-env', async () => {
    const f = await failure(loadDecryptionKey(alice.privateArmored));
    expect(f).toMatchObject({
      code: ErrorCodes.PASSPHRASE,
      message: expect.stringContaining(alice.fingerprint),
    });
    expect(f.hint).toMatch(/--passphrase-env/);
  });

  it('says E_PASSPHRASE on a wrong passphrase', async () => {
    const f = await failure(loadDecryptionKey(alice.privateArmored, 'wrong passphrase'));
    expect(f).toMatchObject({
      code: ErrorCodes.PASSPHRASE,
      message: expect.stringMatching(/wrong passphrase/),
    });
  });
});

describe('cipher selection', () => {
  const saved = process.env.DBCRATE_OPENPGP_IMPLEMENTATION;
  afterEach(() => {
    if (saved === undefined) delete process.env.DBCRATE_OPENPGP_IMPLEMENTATION;
    else process.env.DBCRATE_OPENPGP_IMPLEMENTATION = saved;
  });

  it('serves native by default, openpgpjs when asked or set in the environment', () => {
    delete process.env.DBCRATE_OPENPGP_IMPLEMENTATION;
    expect(getCipher('openpgp').implementation).toBe('native');
    expect(getCipher('openpgp', { implementation: 'auto' }).implementation).toBe('native');
    expect(getCipher('openpgp', { implementation: 'openpgpjs' }).implementation).toBe('openpgpjs');
    expect(getCipherByExtension('pgp', { implementation: 'openpgpjs' }).implementation).toBe('openpgpjs');
    process.env.DBCRATE_OPENPGP_IMPLEMENTATION = 'openpgpjs';
    expect(getCipher('openpgp').implementation).toBe('openpgpjs');
    expect(getCipher('openpgp', { implementation: 'native' }).implementation).toBe('native');
    process.env.DBCRATE_OPENPGP_IMPLEMENTATION = 'gpg';
    expect(() => getCipher('openpgp')).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
  });

  it.each([
    ['native', 'openpgpjs'],
    ['openpgpjs', 'native'],
  ] as const)('%s encrypts what %s decrypts (streams and buffers)', async (from, to) => {
    const enc = getCipher('openpgp', { implementation: from });
    const dec = getCipher('openpgp', { implementation: to });
    for (const size of [0, 1, 1_000_000, 3 * 1024 * 1024 + 7]) {
      const data = noise(size, size + 3);
      const ct = await through(data, enc.encryptor([aliceR, bobR]));
      expect(sha256(await through(ct, dec.decryptor([bobK])))).toBe(sha256(data));
      const b = await enc.encryptBuffer(data, [aliceR]);
      expect(sha256(Buffer.from(await dec.decryptBuffer(b, [aliceK])))).toBe(sha256(data));
    }
  });
});

describe.each(IMPLEMENTATIONS)('openpgp cipher (%s)', (implementation) => {
  const cipher = getCipher('openpgp', { implementation });

  it('is found by name and by extension', () => {
    expect(cipher.name).toBe('openpgp');
    expect(cipher.extension).toBe('pgp');
    expect(getCipherByExtension('.pgp', { implementation })).toBe(cipher);
    expect(() => getCipher('age')).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
  });

  it.each([
    ['0 bytes', 0],
    ['small', 37],
    ['8 MiB streamed', 8 * 1024 * 1024],
  ])('round-trips %s', async (_l, size) => {
    const data = noise(size, size + 1);
    const ct = await through(data, cipher.encryptor([aliceR]));
    expect(ct.length).toBeGreaterThan(size);
    expect(sha256(await through(ct, cipher.decryptor([aliceK])))).toBe(sha256(data));
  });

  it('writes binary SEIPD v1 with AES-256 and no compression packet (what GnuPG 2.2 reads)', async () => {
    const ct = await through(Buffer.from('payload'), cipher.encryptor([aliceR]));
    // First packet: PKESK (tag 1), not armor text.
    expect(ct[0] & 0x80).toBe(0x80);
    expect(ct.toString('latin1', 0, 5)).not.toBe('-----');
    const message = await readMessage({ binaryMessage: ct });
    const tags = message.packets.map((p) => (p.constructor as unknown as { tag: number }).tag);
    expect(tags).toEqual([1, 18]);
    const seipd = message.packets[1] as unknown as { version: number };
    expect(seipd.version).toBe(1);
    const [sk] = await decryptSessionKeys({ message, decryptionKeys: aliceK.key as PrivateKey });
    expect(sk.algorithm).toBe('aes256');
    const inner = await (await readMessage({ binaryMessage: ct })).decrypt([aliceK.key as PrivateKey]);
    expect(inner.packets.map((p) => (p.constructor as unknown as { tag: number }).tag)).toEqual([11]); // literal only
  });

  it("does the bulk work in Node's OpenSSL (AES-256-CFB, SHA-1) in large chunks", async () => {
    const nodeCrypto = jest.requireActual<typeof import('node:crypto')>('node:crypto');
    const cipherSpy = jest.spyOn(nodeCrypto, 'createCipheriv');
    const decipherSpy = jest.spyOn(nodeCrypto, 'createDecipheriv');
    const hashSpy = jest.spyOn(nodeCrypto, 'createHash');
    try {
      const data = noise(4 * 1024 * 1024, 8);
      const enc = cipher.encryptor([aliceR]);
      let chunks = 0;
      enc.on('data', () => chunks++);
      const ct = await through(data, enc);
      expect(cipherSpy.mock.calls.map((c) => c[0])).toContain('aes-256-cfb');
      expect(hashSpy.mock.calls.map((c) => c[0])).toContain('sha1');
      expect(ct.length / chunks).toBeGreaterThan(32 * 1024); // not a flood of tiny chunks
      expect(sha256(await through(ct, cipher.decryptor([aliceK])))).toBe(sha256(data));
      // CFB decryption: an AES-256-CFB decipher, or AES-256-ECB over the ciphertext (cfb.decipher.ts)
      const decrypted = [
        ...decipherSpy.mock.calls.filter((c) => c[0] === 'aes-256-cfb'),
        ...cipherSpy.mock.calls.filter((c) => c[0] === 'aes-256-ecb'),
      ];
      expect(decrypted.length).toBeGreaterThan(0);
    } finally {
      jest.restoreAllMocks();
    }
  });

  it('encrypts to two recipients, each of whom can decrypt', async () => {
    const data = noise(300_000, 5);
    const ct = await through(data, cipher.encryptor([aliceR, bobR]));
    expect(await recipientKeyIds(ct)).toEqual([aliceR, bobR].map((r) => r.encryptionKeyIds[0].slice(-16)));
    expect(sha256(await through(ct, cipher.decryptor([aliceK])))).toBe(sha256(data));
    expect(sha256(await through(ct, cipher.decryptor([bobK])))).toBe(sha256(data));
  });

  it('names the recipients when the key is wrong (E_WRONG_KEY)', async () => {
    const ct = await through(noise(1000), cipher.encryptor([aliceR]));
    const f = await failure(
      through(ct, cipher.decryptor([bobK], { expectedRecipients: [alice.fingerprint] })),
    );
    expect(f.code).toBe(ErrorCodes.WRONG_KEY);
    expect(f.message).toContain(aliceR.encryptionKeyIds[0].slice(-16));
    expect(f.message).toContain(alice.fingerprint);
    expect(f.message).toContain(bob.fingerprint);
  });

  it.each([
    ['in the session key packet', 40],
    ['early in the data', 200],
    ['in the middle', 0.5],
    ['in the MDC at the end', -5],
  ])('fails with E_INTEGRITY on a flipped byte %s', async (_l, where) => {
    const ct = Buffer.from(await through(noise(1_000_000, 9), cipher.encryptor([aliceR])));
    const at = where < 0 ? ct.length + where : where < 1 ? Math.floor(ct.length * where) : where;
    ct[at] ^= 0x01;
    expect((await failure(through(ct, cipher.decryptor([aliceK])))).code).toBe(ErrorCodes.INTEGRITY);
  });

  it('fails with E_INTEGRITY on truncated ciphertext, at any cut', async () => {
    const ct = await through(noise(1_000_000, 3), cipher.encryptor([aliceR]));
    for (const cut of [0, 5, 120, 400, ct.length >> 1, ct.length - 21, ct.length - 1]) {
      expect((await failure(through(ct.subarray(0, cut), cipher.decryptor([aliceK])))).code).toBe(
        ErrorCodes.INTEGRITY,
      );
    }
  });

  it('streams: plaintext flows before the ciphertext ends, and tampering still fails at the end', async () => {
    const data = noise(4 * 1024 * 1024, 4);
    const ct = Buffer.from(await through(data, cipher.encryptor([aliceR])));
    ct[ct.length - 3] ^= 0x80; // damage only the MDC
    const d = cipher.decryptor([aliceK]);
    let received = 0;
    d.on('data', (c: Buffer) => (received += c.length));
    const failed = once(d, 'error');
    d.write(ct.subarray(0, ct.length >> 1));
    await new Promise((r) => setTimeout(r, 300));
    expect(received).toBeGreaterThan(1024 * 1024); // released before the end: memory stays bounded
    d.end(ct.subarray(ct.length >> 1));
    const [err] = (await failed) as [{ code: string }];
    expect(err.code).toBe(ErrorCodes.INTEGRITY);
  });

  it('fails fast, without hanging, when the source fails or the stage is destroyed', async () => {
    async function* failing(): AsyncGenerator<Buffer> {
      yield noise(300_000);
      throw new Error('zstd died');
    }
    await expect(
      pipeline(Readable.from(failing()), cipher.encryptor([aliceR]), new PassThrough().resume()),
    ).rejects.toThrow('zstd died');
    const d = cipher.decryptor([aliceK]);
    d.write(await through(noise(300_000), cipher.encryptor([aliceR])));
    d.destroy(new Error('cancelled'));
    await expect(finished(d)).rejects.toThrow('cancelled');
  });

  it('reads a message fed in any slicing (headers split across writes)', async () => {
    for (const [size, slice] of [
      [3000, 1],
      [2 * 1024 * 1024 + 9, 4093],
      [1024 * 1024 - 6, 1021],
    ]) {
      const data = noise(size, slice);
      for (const ct of [
        await through(data, cipher.encryptor([aliceR])),
        Buffer.from(await cipher.encryptBuffer(data, [aliceR])),
      ]) {
        const out = await pipeThrough(chunked(ct, slice), cipher.decryptor([aliceK]));
        expect(sha256(out)).toBe(sha256(data));
      }
    }
  });

  it('writes the same plaintext fed in any slicing', async () => {
    const data = noise(1024 * 1024 + 100, 6);
    const ct = await pipeThrough(chunked(data, 777), cipher.encryptor([aliceR]));
    expect(sha256(await through(ct, cipher.decryptor([aliceK])))).toBe(sha256(data));
  });

  it('refuses to encrypt to nobody', () => {
    expect(() => cipher.encryptor([])).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
  });
});

describe('recipientKeyIds', () => {
  it('reads key IDs from header bytes and from a stream, without a key', async () => {
    const ct = await through(noise(500_000), cipher.encryptor([bobR, aliceR]));
    const expected = [bobR, aliceR].map((r) => r.encryptionKeyIds[0].slice(-16));
    expect(await recipientKeyIds(ct.subarray(0, 1024))).toEqual(expected);
    const stream = Readable.from([ct.subarray(0, 50), ct.subarray(50, 300), ct.subarray(300)]);
    expect(await recipientKeyIds(stream)).toEqual(expected);
    expect(stream.destroyed).toBe(true);
  });

  it('rejects data that is not OpenPGP', async () => {
    expect((await failure(recipientKeyIds(Buffer.from('hello')))).code).toBe(ErrorCodes.INTEGRITY);
    expect((await failure(recipientKeyIds(new Uint8Array(0)))).code).toBe(ErrorCodes.INTEGRITY);
  });
});
