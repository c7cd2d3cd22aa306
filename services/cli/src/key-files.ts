import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, open, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { FileKeyProvider } from '@dbcrate/crypto';

/** The key files a command's settings name, behind the `KeyProvider` the library flows take. */
export function keysFrom(s: {
  recipient?: string[];
  signingKey?: string;
  signingPassphraseEnv?: string;
  key?: string;
  passphraseEnv?: string;
  trust?: string[];
  allowUnsigned?: boolean;
}): FileKeyProvider {
  return new FileKeyProvider({
    recipients: s.recipient,
    signingKey: s.signingKey,
    signingPassphraseEnv: s.signingPassphraseEnv,
    privateKey: s.key,
    passphraseEnv: s.passphraseEnv,
    trust: s.trust,
    allowUnsigned: s.allowUnsigned,
  });
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
