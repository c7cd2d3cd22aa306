import { readFile } from 'node:fs/promises';
import { DbcrateError, ErrorCodes, registerSecret } from '@dbcrate/core';
import { loadDecryptionKey, loadRecipientKey, type DecryptionKey, type RecipientKey } from '@dbcrate/crypto';

async function readKeyFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      {
        hint: 'check the path',
      },
    );
  }
}

export async function loadRecipients(paths: string[]): Promise<RecipientKey[]> {
  const keys: RecipientKey[] = [];
  for (const p of paths) keys.push(await loadRecipientKey(await readKeyFile(p, 'recipient key')));
  return keys;
}

/** The passphrase is read from the environment variable the user names, never from a flag (flags show in `ps`). */
export function passphraseFrom(envVar: string | undefined): string | undefined {
  if (!envVar) return undefined;
  const v = process.env[envVar];
  if (v === undefined) {
    throw new DbcrateError(
      ErrorCodes.PASSPHRASE,
      `environment variable ${envVar} (named by --passphrase-env) is not set`,
      {
        hint: `export ${envVar}=… before running dbcrate`,
      },
    );
  }
  registerSecret(v);
  return v;
}

export async function loadPrivateKey(
  path: string,
  passphraseEnv: string | undefined,
): Promise<DecryptionKey> {
  return loadDecryptionKey(await readKeyFile(path, 'private key'), passphraseFrom(passphraseEnv));
}
