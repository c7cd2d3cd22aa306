import { DbcrateError, ErrorCodes, PluginRegistry } from '@dbcrate/core';
import type { Cipher } from './cipher';
import { OpenPgpCipher } from './openpgp.cipher';

let registry: PluginRegistry<Cipher> | undefined;

/** Ciphers by name ("openpgp") and object-name extension ("pgp"). */
export function cipherRegistry(): PluginRegistry<Cipher> {
  if (!registry) {
    registry = new PluginRegistry<Cipher>('cipher');
    registry.register(new OpenPgpCipher());
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

export function getCipher(name = 'openpgp'): Cipher {
  const cipher = cipherRegistry().byName(name);
  if (!cipher) throw unknown(`cipher "${name}"`);
  return cipher;
}

export function getCipherByExtension(extension: string): Cipher {
  const cipher = cipherRegistry().byExtension(extension);
  if (!cipher) throw unknown(`encrypted file extension "${extension}"`);
  return cipher;
}
