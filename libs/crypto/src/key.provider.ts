import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DbcrateError, ErrorCodes, registerSecret } from '@dbcrate/core';
import type { DecryptionKey, RecipientKey } from './cipher';
import { loadDecryptionKey, loadRecipientKey } from './keys';
import { loadSigningKey, loadTrustedKeys, type SigningKey, type TrustPolicy } from './signing';

/**
 * Where the keys of one piece of work come from. Library flows ask for the keys they need,
 * when they need them (unlocking a private key costs, and most WAL fetches answer "not
 * archived" before needing it), instead of being handed paths. Files today
 * (`FileKeyProvider`); the enrolled agent's identity and credentials held in memory for the
 * length of a job next (`MemoryKeyProvider`).
 */
export interface KeyProvider {
  /** The organisation public keys that what is written is encrypted to. */
  recipients(): Promise<RecipientKey[]>;
  /** This host's signing key: what it writes is signed with it. */
  signingKey(): Promise<SigningKey>;
  /** The private keys that open what was written (a recovery host only). */
  decryptionKeys(): Promise<DecryptionKey[]>;
  /** Whose signatures a reader accepts. */
  trust(): Promise<TrustPolicy>;
  /**
   * Arguments with which a separate `dbcrate` reader (restore_command, the detached WAL
   * prefetcher) opens the same decryption keys and trust, or undefined when the keys exist
   * only in this process and cannot be handed on.
   */
  readerArgs(): string[] | undefined;
  /**
   * Environment variables holding the decryption keys' secrets (their passphrase), which a
   * process that needs no key (a recovered server) must not inherit.
   */
  secretEnv(): string[];
}

export interface FileKeySettings {
  /** Public key files to encrypt to (--recipient). */
  recipients?: string[];
  /** This host's signing key file and the environment variable holding its passphrase. */
  signingKey?: string;
  signingPassphraseEnv?: string;
  /** The organisation private key file (--key) and its passphrase's environment variable. */
  privateKey?: string;
  passphraseEnv?: string;
  /** Trusted signer public key files; each value may be a comma- or colon-separated list. */
  trust?: string[];
  /** Also accept objects without a signature (archives made before signing). */
  allowUnsigned?: boolean;
  /** Where passphrases are read from (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** --trust values as files: each may be a comma- or colon-separated list (DBCRATE_TRUST=a.asc:b.asc). */
export function trustPaths(values: string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((p) => p.split(/[,:]/))
    .map((p) => p.trim())
    .filter(Boolean);
}

/**
 * A passphrase is read from the environment variable the user names, never from a flag
 * (flags show in `ps`), and registered as a secret of the current work.
 */
export function passphraseFrom(
  envVar: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (!envVar) return undefined;
  const v = env[envVar];
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

export async function readKeyFile(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new DbcrateError(
      ErrorCodes.KEY_INVALID,
      `cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      { hint: 'check the path' },
    );
  }
}

/** Keys read from files, each on first use and then kept for the life of the provider. */
export class FileKeyProvider implements KeyProvider {
  private readonly cache = new Map<string, Promise<unknown>>();
  /** Passphrases read so far: registered again in the scope of every caller (every job). */
  private readonly secrets = new Set<string>();

  constructor(private readonly s: FileKeySettings) {}

  recipients(): Promise<RecipientKey[]> {
    return this.once('recipients', async () => {
      const paths = this.s.recipients ?? [];
      if (paths.length === 0)
        throw missing('no public key to encrypt to was given', '--recipient PUBKEY_FILE');
      const keys: RecipientKey[] = [];
      for (const p of paths) keys.push(await loadRecipientKey(await readKeyFile(p, 'recipient key')));
      return keys;
    });
  }

  signingKey(): Promise<SigningKey> {
    return this.once('signing', async () => {
      const path = this.s.signingKey;
      if (!path)
        throw missing('no signing key was given: what this host writes must be signed', '--signing-key FILE');
      return loadSigningKey(
        await readKeyFile(path, 'signing key'),
        this.passphrase(this.s.signingPassphraseEnv),
      );
    });
  }

  decryptionKeys(): Promise<DecryptionKey[]> {
    return this.once('decryption', async () => {
      const path = this.s.privateKey;
      if (!path) throw missing('no private key was given', '--key PRIVKEY_FILE');
      const key = await loadDecryptionKey(
        await readKeyFile(path, 'private key'),
        this.passphrase(this.s.passphraseEnv),
      );
      return [key];
    });
  }

  /**
   * The signer keys of --trust, or with --allow-unsigned also objects without a signature.
   * Neither is refused: silently accepting unsigned objects is what let forged backups be
   * restored.
   */
  trust(): Promise<TrustPolicy> {
    return this.once('trust', async () => {
      const paths = trustPaths(this.s.trust);
      if (paths.length === 0 && !this.s.allowUnsigned) {
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
      return { trusted: await loadTrustedKeys(texts), allowUnsigned: this.s.allowUnsigned ?? false };
    });
  }

  readerArgs(): string[] | undefined {
    if (!this.s.privateKey) return undefined;
    const args = ['--key', resolve(this.s.privateKey)];
    if (this.s.passphraseEnv) args.push('--passphrase-env', this.s.passphraseEnv);
    for (const t of trustPaths(this.s.trust)) args.push('--trust', resolve(t));
    if (this.s.allowUnsigned) args.push('--allow-unsigned');
    return args;
  }

  secretEnv(): string[] {
    return this.s.passphraseEnv ? [this.s.passphraseEnv] : [];
  }

  private passphrase(envVar: string | undefined): string | undefined {
    const v = passphraseFrom(envVar, this.s.env);
    if (v) this.secrets.add(v);
    return v;
  }

  private once<T>(name: string, load: () => Promise<T>): Promise<T> {
    let p = this.cache.get(name) as Promise<T> | undefined;
    if (!p) {
      p = load();
      this.cache.set(name, p);
      // A failure is not kept: the next call tries again (a file fixed meanwhile).
      p.catch(() => this.cache.delete(name));
    }
    return p.then((v) => {
      for (const secret of this.secrets) registerSecret(secret);
      return v;
    });
  }
}

/** Keys already in memory (an enrolled agent's identity, credentials fetched for a job). */
export class MemoryKeyProvider implements KeyProvider {
  constructor(
    private readonly k: {
      recipients?: RecipientKey[];
      signingKey?: SigningKey;
      decryptionKeys?: DecryptionKey[];
      trust?: TrustPolicy;
    },
  ) {}

  recipients(): Promise<RecipientKey[]> {
    const r = this.k.recipients ?? [];
    return r.length
      ? Promise.resolve(r)
      : Promise.reject(missing('no public key to encrypt to', 'a recipient key'));
  }

  signingKey(): Promise<SigningKey> {
    return this.k.signingKey
      ? Promise.resolve(this.k.signingKey)
      : Promise.reject(missing('no signing key', 'a signing key'));
  }

  decryptionKeys(): Promise<DecryptionKey[]> {
    const d = this.k.decryptionKeys ?? [];
    return d.length
      ? Promise.resolve(d)
      : Promise.reject(missing('no private key on this host', 'a private key'));
  }

  trust(): Promise<TrustPolicy> {
    return this.k.trust
      ? Promise.resolve(this.k.trust)
      : Promise.reject(missing('no trusted signer key', 'a trusted signer key'));
  }

  readerArgs(): undefined {
    return undefined;
  }

  secretEnv(): string[] {
    return [];
  }
}

function missing(what: string, give: string): DbcrateError {
  return new DbcrateError(ErrorCodes.CONFIG, what, { hint: `give ${give}` });
}
