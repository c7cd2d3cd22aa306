import { DbcrateError, ErrorCodes, PluginRegistry } from '@dbcrate/core';
import type { Cipher } from './cipher';
import { NativeOpenPgpCipher } from './native.cipher';
import { OpenPgpCipher } from './openpgp.cipher';

/** Who does the per-byte work of the "openpgp" format: node:crypto directly, or openpgp.js. */
export type OpenPgpImplementation = 'native' | 'openpgpjs' | 'auto';

export interface GetCipherOptions {
  /** auto (default): DBCRATE_OPENPGP_IMPLEMENTATION if set, else native. */
  implementation?: OpenPgpImplementation;
}

/** The environment variable that overrides `auto` (docs/format.md). */
export const OPENPGP_IMPLEMENTATION_ENV = 'DBCRATE_OPENPGP_IMPLEMENTATION';

let registry: PluginRegistry<Cipher> | undefined;
let nativeCipher: NativeOpenPgpCipher | undefined;
let jsCipher: OpenPgpCipher | undefined;

function openpgpCipher(implementation: OpenPgpImplementation): Cipher {
  switch (implementation) {
    case 'native':
      nativeCipher ??= new NativeOpenPgpCipher();
      return nativeCipher;
    case 'openpgpjs':
      jsCipher ??= new OpenPgpCipher();
      return jsCipher;
    case 'auto': {
      const env = process.env[OPENPGP_IMPLEMENTATION_ENV];
      if (env === undefined || env === '' || env === 'auto') return openpgpCipher('native');
      if (env === 'native' || env === 'openpgpjs') return openpgpCipher(env);
      throw new DbcrateError(
        ErrorCodes.CONFIG,
        `${OPENPGP_IMPLEMENTATION_ENV}="${env}" is not an OpenPGP implementation`,
        {
          hint: 'Use native, openpgpjs or auto (or leave it unset).',
        },
      );
    }
    default:
      throw new DbcrateError(
        ErrorCodes.CONFIG,
        `unknown OpenPGP implementation "${String(implementation)}"`,
        {
          hint: 'Use auto, native or openpgpjs.',
        },
      );
  }
}

/** Ciphers by name ("openpgp") and object-name extension ("pgp"); "openpgp" resolves per call (see getCipher). */
export function cipherRegistry(): PluginRegistry<Cipher> {
  if (!registry) {
    registry = new PluginRegistry<Cipher>('cipher');
    registry.register(openpgpCipher('openpgpjs'));
  }
  return registry;
}

function unknown(what: string): DbcrateError {
  const known = cipherRegistry()
    .names()
    .map((n) => `${n} (.${cipherRegistry().byName(n)?.extension})`)
    .join(', ');
  return new DbcrateError(ErrorCodes.CONFIG, `unknown ${what}`, { hint: `Known ciphers: ${known}.` });
}

export function getCipher(name = 'openpgp', opts: GetCipherOptions = {}): Cipher {
  const cipher = cipherRegistry().byName(name);
  if (!cipher) throw unknown(`cipher "${name}"`);
  if (name === 'openpgp') return openpgpCipher(opts.implementation ?? 'auto');
  return cipher;
}

export function getCipherByExtension(extension: string, opts: GetCipherOptions = {}): Cipher {
  const cipher = cipherRegistry().byExtension(extension);
  if (!cipher) throw unknown(`encrypted file extension "${extension}"`);
  return getCipher(cipher.name, opts);
}
