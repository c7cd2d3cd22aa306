import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, MASK, isDbcrateError, redact, runInScope } from '@dbcrate/core';
import { FileKeyProvider, MemoryKeyProvider, trustPaths } from './key.provider';
import { generateKeyPair } from './keys';
import { generateSigningKey } from './signing';

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'dbcrate-keyprovider-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A key pair whose passphrase is registered in a throwaway scope, not in the process's (which every scope masks). */
const quietly = (o: { name: string; passphrase: string }) => runInScope({}, () => generateKeyPair(o));

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isDbcrateError(e)) return e.code;
    throw e;
  }
  throw new Error('expected a failure');
}

describe('trust settings', () => {
  it('reads --trust values as files, each possibly a comma- or colon-separated list', () => {
    expect(trustPaths(['a.asc', 'b.asc,c.asc', ' d.asc:e.asc ', ''])).toEqual([
      'a.asc',
      'b.asc',
      'c.asc',
      'd.asc',
      'e.asc',
    ]);
    expect(trustPaths(undefined)).toEqual([]);
  });

  it('refuses neither --trust nor --allow-unsigned, saying what to pass', async () => {
    expect(await code(new FileKeyProvider({}).trust())).toBe(ErrorCodes.CONFIG);
    expect(await new FileKeyProvider({ allowUnsigned: true }).trust()).toEqual({
      trusted: [],
      allowUnsigned: true,
    });
  });
});

describe('FileKeyProvider', () => {
  it('opens the private key with the passphrase from the named variable, registered as a secret of the job', async () => {
    const pair = await quietly({ name: 'org', passphrase: 'file-key-pass-1' });
    const keyFile = join(dir, 'org.key.asc');
    writeFileSync(keyFile, pair.privateArmored, { mode: 0o600 });
    await runInScope({}, async () => {
      const keys = new FileKeyProvider({
        privateKey: keyFile,
        passphraseEnv: 'TEST_PASS',
        env: { TEST_PASS: 'file-key-pass-1' },
      });
      const [k] = await keys.decryptionKeys();
      expect(k.fingerprint).toBe(pair.fingerprint);
      expect(redact('oops file-key-pass-1')).toBe(`oops ${MASK}`);
      // Loaded once, then kept.
      expect((await keys.decryptionKeys())[0]).toBe(k);
      // A reader child gets the file and the variable's name, never the passphrase.
      expect(keys.readerArgs()).toEqual(['--key', keyFile, '--passphrase-env', 'TEST_PASS']);
      expect(keys.secretEnv()).toEqual(['TEST_PASS']);
    });
  });

  it('says which passphrase variable is missing, and tries again once it is set', async () => {
    const pair = await quietly({ name: 'org', passphrase: 'file-key-pass-2' });
    const keyFile = join(dir, 'org.key.asc');
    writeFileSync(keyFile, pair.privateArmored, { mode: 0o600 });
    const env: NodeJS.ProcessEnv = {};
    const keys = new FileKeyProvider({ privateKey: keyFile, passphraseEnv: 'LATER_PASS', env });
    await expect(keys.decryptionKeys()).rejects.toThrow(/LATER_PASS/);
    env.LATER_PASS = 'file-key-pass-2';
    expect((await keys.decryptionKeys())[0].fingerprint).toBe(pair.fingerprint);
  });

  it('names the unreadable file and the missing setting', async () => {
    await expect(new FileKeyProvider({ recipients: [join(dir, 'nope.asc')] }).recipients()).rejects.toThrow(
      /nope\.asc: ENOENT/,
    );
    expect(await code(new FileKeyProvider({}).signingKey())).toBe(ErrorCodes.CONFIG);
    expect(await code(new FileKeyProvider({}).decryptionKeys())).toBe(ErrorCodes.CONFIG);
    expect(new FileKeyProvider({}).readerArgs()).toBeUndefined();
  });

  it('loads the signing key and the recipients', async () => {
    const signing = await generateSigningKey({ name: 'host' });
    const pair = await generateKeyPair({ name: 'org' });
    writeFileSync(join(dir, 'sign.asc'), signing.privateArmored);
    writeFileSync(join(dir, 'org.pub.asc'), pair.publicArmored);
    const keys = new FileKeyProvider({
      signingKey: join(dir, 'sign.asc'),
      recipients: [join(dir, 'org.pub.asc')],
    });
    expect((await keys.signingKey()).fingerprint).toBe(signing.fingerprint);
    expect((await keys.recipients()).map((r) => r.fingerprint)).toEqual([pair.fingerprint]);
  });
});

describe('MemoryKeyProvider', () => {
  it('hands on nothing to a child process and refuses keys it does not hold', async () => {
    const keys = new MemoryKeyProvider({});
    expect(keys.readerArgs()).toBeUndefined();
    expect(keys.secretEnv()).toEqual([]);
    expect(await code(keys.decryptionKeys())).toBe(ErrorCodes.CONFIG);
    expect(await code(keys.trust())).toBe(ErrorCodes.CONFIG);
  });
});

describe('FileKeyProvider shared by jobs', () => {
  it('registers the passphrase in the scope of every job that uses the key, not only the first', async () => {
    const pair = await quietly({ name: 'org', passphrase: 'shared-pass-77' });
    const keyFile = join(dir, 'org.key.asc');
    writeFileSync(keyFile, pair.privateArmored, { mode: 0o600 });
    const keys = new FileKeyProvider({
      privateKey: keyFile,
      passphraseEnv: 'P',
      env: { P: 'shared-pass-77' },
    });
    const job = () =>
      runInScope({}, async () => {
        await keys.decryptionKeys();
        return redact('saw shared-pass-77');
      });
    expect(await job()).toBe(`saw ${MASK}`);
    expect(await job()).toBe(`saw ${MASK}`);
    expect(await Promise.all([job(), job()])).toEqual([`saw ${MASK}`, `saw ${MASK}`]);
  });
});
