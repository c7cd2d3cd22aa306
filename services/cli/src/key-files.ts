import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, open, readFile, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { DbcrateError, ErrorCodes, registerSecret } from '@dbcrate/core';
import {
  loadDecryptionKey,
  loadRecipientKey,
  loadSigningKey,
  loadTrustedKeys,
  type DecryptionKey,
  type RecipientKey,
  type SigningKey,
  type TrustPolicy,
} from '@dbcrate/crypto';

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

export interface KeyFile {
  path: string;
  data: string;
  mode: number;
}

/**
 * Write new key files all together or not at all: each goes to a temp file (fsynced) in
 * its directory first, then is linked to its name, which fails rather than replace an
 * existing key; if any link fails, the ones already made are removed again. A public key
 * left beside an old private key would make every backup to it unrestorable.
 */
export async function writeKeyFiles(files: KeyFile[]): Promise<void> {
  const temps: string[] = [];
  const made: string[] = [];
  try {
    for (const f of files) {
      if (existsSync(f.path)) throw exists(f.path);
    }
    for (const f of files) {
      const tmp = join(dirname(f.path), `.${basename(f.path)}.${randomBytes(6).toString('hex')}.tmp`);
      const fh = await open(tmp, 'wx', f.mode);
      temps.push(tmp);
      try {
        await fh.writeFile(f.data);
        await fh.chmod(f.mode); // the umask may have narrowed or (for 0644) not mattered
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
    for (const [i, f] of files.entries()) {
      try {
        await link(temps[i], f.path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw exists(f.path);
        throw e;
      }
      made.push(f.path);
    }
    for (const d of new Set(files.map((f) => dirname(f.path)))) await syncDir(d);
  } catch (e) {
    await Promise.all(made.map((p) => unlink(p).catch(() => undefined)));
    if (e instanceof DbcrateError) throw e;
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `cannot write the key files (${files.map((f) => f.path).join(', ')}): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; none was written`,
      { hint: 'check that the --out directory is writable', cause: e },
    );
  } finally {
    await Promise.all(temps.map((t) => unlink(t).catch(() => undefined)));
  }
}

function exists(path: string): DbcrateError {
  return new DbcrateError(
    ErrorCodes.USAGE,
    `${path} already exists; refusing to overwrite a key (nothing was written)`,
    {
      hint: 'choose another --name or --out directory',
    },
  );
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** The host's signing key (--signing-key FILE, its passphrase from --signing-passphrase-env VAR). */
export async function loadSigning(path: string, passphraseEnv: string | undefined): Promise<SigningKey> {
  return loadSigningKey(await readKeyFile(path, 'signing key'), passphraseFrom(passphraseEnv));
}

/** --trust values as files: each may be a comma- or colon-separated list (DBCRATE_TRUST=a.asc:b.asc). */
export function trustPaths(values: string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((p) => p.split(/[,:]/))
    .map((p) => p.trim())
    .filter(Boolean);
}

/**
 * What a reader trusts: the signer keys of --trust (files; DBCRATE_TRUST is a comma list),
 * or with --allow-unsigned also objects without a signature. Neither is refused: silently
 * accepting unsigned objects is what let forged backups be restored.
 */
export async function trustPolicyFrom(s: {
  trust?: string[];
  allowUnsigned?: boolean;
}): Promise<TrustPolicy> {
  const paths = trustPaths(s.trust);
  if (paths.length === 0 && !s.allowUnsigned) {
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      'no trusted signer key given: cannot tell real backups from forged ones',
      {
        hint:
          "pass the producing host's signer public key with --trust FILE (DBCRATE_TRUST, or trust: in the --config file; " +
          'from dbcrate keys generate-signing); for an archive made before signing, --allow-unsigned',
      },
    );
  }
  const texts: string[] = [];
  for (const p of paths) texts.push(await readKeyFile(p, 'trusted signer key'));
  return { trusted: await loadTrustedKeys(texts), allowUnsigned: s.allowUnsigned ?? false };
}
