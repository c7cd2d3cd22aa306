import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, isDbcrateError, MASK, redact, runInScope } from '@dbcrate/core';
import { loadSealingKey, openSecret, sealingKey, sealSecret } from './secret.seal';

const code = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    if (isDbcrateError(e)) return e.code;
    throw e;
  }
  throw new Error('expected a failure');
};

describe('sealed secrets (AES-256-GCM envelope)', () => {
  const k = sealingKey(randomBytes(32));

  it('open what they sealed, for the row they were sealed for only', () => {
    const sealed = sealSecret(k, 'AKIA-secret-key', 'org-a/destination/d1');
    expect(sealed.includes(Buffer.from('AKIA-secret-key'))).toBe(false);
    expect(openSecret(k, sealed, 'org-a/destination/d1').toString()).toBe('AKIA-secret-key');
    expect(code(() => openSecret(k, sealed, 'org-b/destination/d1'))).toBe(ErrorCodes.INTEGRITY);
  });

  it('refuse an altered value, and say when another key sealed it', () => {
    const sealed = sealSecret(k, 'pw', 'x');
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 1] ^= 1;
    expect(code(() => openSecret(k, flipped, 'x'))).toBe(ErrorCodes.INTEGRITY);
    expect(code(() => openSecret(sealingKey(randomBytes(32)), sealed, 'x'))).toBe(ErrorCodes.WRONG_KEY);
    expect(code(() => openSecret(k, sealed.subarray(0, 10), 'x'))).toBe(ErrorCodes.INTEGRITY);
  });

  it('load the key from a 0600 file only, and never show it in a log', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dbcrate-sealkey-'));
    try {
      const text = randomBytes(32).toString('base64');
      const file = join(dir, 'secret.key');
      writeFileSync(file, text + '\n', { mode: 0o644 });
      expect(code(() => loadSealingKey({ DBCRATE_SECRET_KEY_FILE: file }))).toBe(ErrorCodes.CONFIG);
      chmodSync(file, 0o600);
      await runInScope({}, async () => {
        expect(loadSealingKey({ DBCRATE_SECRET_KEY_FILE: file }).id).toMatch(/^[0-9a-f]{16}$/);
        expect(redact(`key ${text}`)).toBe(`key ${MASK}`);
      });
      expect(code(() => loadSealingKey({}))).toBe(ErrorCodes.CONFIG);
      expect(code(() => loadSealingKey({ DBCRATE_SECRET_KEY: Buffer.alloc(16).toString('base64') }))).toBe(
        ErrorCodes.CONFIG,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
