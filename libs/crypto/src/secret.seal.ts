import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { DbcrateError, ErrorCodes, registerSecret } from '@dbcrate/core';

/**
 * Secrets the control plane keeps (storage credentials, database passwords, notifier
 * secrets) are sealed with its own key in an AES-256-GCM envelope before they reach the
 * database, and bound to the row they belong to (the additional data): a sealed value copied
 * into another organisation's row does not open there.
 *
 *   1 byte version (1) | 8 bytes key id (sha256 of the key) | 12 bytes IV | 16 bytes tag | ciphertext
 */
const VERSION = 1;
const HEADER = 1 + 8 + 12 + 16;

export interface SealingKey {
  readonly key: Buffer;
  /** The first 8 bytes of the key's sha256, hex: says which key sealed a value, never the key. */
  readonly id: string;
}

export function sealingKey(raw: Buffer): SealingKey {
  if (raw.length !== 32) {
    throw new DbcrateError(ErrorCodes.CONFIG, `the control-plane key must be 32 bytes, not ${raw.length}`, {
      hint: 'make one with: head -c 32 /dev/urandom | base64 (dbcrate server init does)',
    });
  }
  return {
    key: Buffer.from(raw),
    id: createHash('sha256').update(raw).digest().subarray(0, 8).toString('hex'),
  };
}

export function sealSecret(k: SealingKey, plaintext: Buffer | string, boundTo: string): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', k.key, iv);
  cipher.setAAD(Buffer.from(boundTo, 'utf8'));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Buffer.from([VERSION]), Buffer.from(k.id, 'hex'), iv, cipher.getAuthTag(), body]);
}

export function openSecret(k: SealingKey, sealed: Buffer, boundTo: string): Buffer {
  if (sealed.length < HEADER || sealed[0] !== VERSION) {
    throw new DbcrateError(ErrorCodes.INTEGRITY, 'a sealed secret is malformed or of an unknown version');
  }
  const id = sealed.subarray(1, 9).toString('hex');
  if (id !== k.id) {
    throw new DbcrateError(
      ErrorCodes.WRONG_KEY,
      `a secret was sealed with control-plane key ${id}, not with this one (${k.id})`,
      {
        hint: 'start the control plane with the key it was set up with (DBCRATE_SECRET_KEY_FILE)',
      },
    );
  }
  const decipher = createDecipheriv('aes-256-gcm', k.key, sealed.subarray(9, 21));
  decipher.setAAD(Buffer.from(boundTo, 'utf8'));
  decipher.setAuthTag(sealed.subarray(21, 37));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(HEADER)), decipher.final()]);
  } catch {
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      'a sealed secret does not open: altered, or moved from the row it belongs to',
    );
  }
}

/**
 * The control-plane key: base64 in the environment variable `envVar`, or the file `fileVar`
 * names, which must be a regular file of this user with mode 0600 (or stricter).
 */
export function loadSealingKey(
  env: NodeJS.ProcessEnv = process.env,
  envVar = 'DBCRATE_SECRET_KEY',
  fileVar = 'DBCRATE_SECRET_KEY_FILE',
): SealingKey {
  let text = env[envVar];
  const file = env[fileVar];
  if (!text && file) {
    let st;
    try {
      st = statSync(file);
    } catch (e) {
      throw new DbcrateError(
        ErrorCodes.CONFIG,
        `${fileVar}: cannot read ${file} (${(e as NodeJS.ErrnoException).code})`,
      );
    }
    if (!st.isFile() || (st.mode & 0o077) !== 0 || (process.getuid && st.uid !== process.getuid())) {
      throw new DbcrateError(
        ErrorCodes.CONFIG,
        `${fileVar}: ${file} must be a regular file of this user with mode 600`,
        {
          hint: `chmod 600 ${file}`,
        },
      );
    }
    text = readFileSync(file, 'utf8').trim();
  }
  if (!text) {
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `missing setting ${fileVar} (or ${envVar}): the control-plane key that seals credentials`,
      {
        hint: 'dbcrate server init writes one; point DBCRATE_SECRET_KEY_FILE at it',
      },
    );
  }
  registerSecret(text);
  const raw = Buffer.from(text, 'base64');
  return sealingKey(raw);
}
