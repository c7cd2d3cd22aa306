import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { createMessage, decrypt, encrypt, readMessage, type PrivateKey } from 'openpgp';
import { DbcrateError, ErrorCodes, isDbcrateError, redact } from '@dbcrate/core';
import type { Cipher, DecryptOptions, DecryptionKey, RecipientKey, SignInsideOptions } from './cipher';
import { recipientPublicKey } from './keys';
import { DECRYPT_CONFIG, ENCRYPT_CONFIG } from './openpgp.config';
import { WILDCARD_KEY_ID } from './pgp-header.parser';
import { checkInsideSignatures, notationsOf, signingKeyObject, trustedKeyObjects } from './signing';
import { WebStreamDuplex } from './web-stream.duplex';

export function detail(e: unknown): string {
  return redact(e instanceof Error ? e.message : String(e));
}

function isAbort(e: unknown): boolean {
  return e instanceof Error && (e.name === 'AbortError' || (e as { code?: string }).code === 'ABORT_ERR');
}

/**
 * OpenPGP (openpgp v6) as a streaming stage.
 *
 * Output is what `gpg --decrypt` (GnuPG 2.2) reads: binary (not armored), one PKESK v3
 * per recipient, then SEIPD v1 (CFB + MDC) with AES-256, no compression packet.
 * Speed: openpgp uses Node's crypto (OpenSSL) for AES-CFB and SHA-1 when it runs on Node
 * (crypto/mode/cfb.js `nodeEncrypt`, crypto/hash `nodeHash`), so the per-byte work is
 * native; chunks arrive at zstd's ~128 KiB output size, which keeps per-chunk overhead of
 * the web-stream plumbing small.
 */
export class OpenPgpCipher implements Cipher {
  readonly name = 'openpgp';
  readonly extension = 'pgp';
  readonly implementation = 'openpgpjs';

  encryptor(recipients: RecipientKey[]): Duplex {
    if (recipients.length === 0) {
      throw new DbcrateError(
        ErrorCodes.CONFIG,
        'no recipient public key given: backups must be encrypted to one',
        {
          hint: 'Pass the organisation public key (--recipient FILE); several keys are allowed during key rotation.',
        },
      );
    }
    return new WebStreamDuplex(
      async (plaintext) => {
        const encryptionKeys = await Promise.all(recipients.map(recipientPublicKey));
        const message = await createMessage({ binary: plaintext, format: 'binary' });
        return (await encrypt({
          message,
          encryptionKeys,
          // Our own session key pins AES-256, whatever cipher preferences the recipient
          // keys list (openpgp would otherwise negotiate, down to AES-128).
          sessionKey: { data: randomBytes(32), algorithm: 'aes256' },
          format: 'binary',
          config: ENCRYPT_CONFIG,
        })) as ReadableStream<Uint8Array>;
      },
      (e) => {
        if (isDbcrateError(e) || isAbort(e)) return e as Error;
        return new DbcrateError(
          /key/i.test(detail(e)) ? ErrorCodes.KEY_INVALID : ErrorCodes.INTERNAL,
          `encryption failed: ${detail(e)}`,
          { cause: e },
        );
      },
    );
  }

  async encryptBuffer(
    data: Uint8Array,
    recipients: RecipientKey[],
    sign?: SignInsideOptions,
  ): Promise<Uint8Array> {
    if (recipients.length === 0) return Promise.reject(this.noRecipients());
    try {
      const encryptionKeys = await Promise.all(recipients.map(recipientPublicKey));
      const message = await createMessage({ binary: data, format: 'binary' });
      return (await encrypt({
        message,
        encryptionKeys,
        // One-pass signature, literal data and signature, all inside the encrypted packet.
        ...(sign
          ? {
              signingKeys: await signingKeyObject(sign.signingKey),
              signatureNotations: notationsOf(sign.notations),
            }
          : {}),
        sessionKey: { data: randomBytes(32), algorithm: 'aes256' },
        format: 'binary',
        config: ENCRYPT_CONFIG,
      })) as Uint8Array;
    } catch (e) {
      if (isDbcrateError(e)) throw e;
      throw new DbcrateError(
        /key/i.test(detail(e)) ? ErrorCodes.KEY_INVALID : ErrorCodes.INTERNAL,
        `encryption failed: ${detail(e)}`,
        { cause: e },
      );
    }
  }

  async decryptBuffer(
    data: Uint8Array,
    keys: DecryptionKey[],
    opts: DecryptOptions = {},
  ): Promise<Uint8Array> {
    requireKeys(keys);
    return (await decryptMessage(data, keys, opts)) as Uint8Array;
  }

  private noRecipients(): DbcrateError {
    return new DbcrateError(
      ErrorCodes.CONFIG,
      'no recipient public key given: backups must be encrypted to one',
      {
        hint: 'Pass the organisation public key (--recipient FILE); several keys are allowed during key rotation.',
      },
    );
  }

  decryptor(keys: DecryptionKey[], opts: DecryptOptions = {}): Duplex {
    requireKeys(keys);
    return new WebStreamDuplex(
      async (ciphertext) => (await decryptMessage(ciphertext, keys, opts)) as ReadableStream<Uint8Array>,
      (e) => damaged(e),
    );
  }
}

export function requireKeys(keys: DecryptionKey[]): void {
  if (keys.length === 0) {
    throw new DbcrateError(ErrorCodes.CONFIG, 'no private key given to decrypt with', {
      hint: 'Pass the organisation private key (--key FILE).',
    });
  }
}

/**
 * Read a message (whole or streamed), check that a key of ours is a recipient, decrypt.
 * The output has the input's shape: bytes for bytes (MDC checked), a stream for a stream.
 */
async function decryptMessage(
  input: Uint8Array | ReadableStream<Uint8Array>,
  keys: DecryptionKey[],
  opts: DecryptOptions,
): Promise<Uint8Array | ReadableStream<Uint8Array>> {
  let message;
  try {
    message = await readMessage({ binaryMessage: input, config: DECRYPT_CONFIG });
  } catch (e) {
    throw damaged(e, 'it is not a readable OpenPGP message');
  }
  const recipients = message.getEncryptionKeyIDs().map((id) => id.toHex().toUpperCase());
  const ours = new Set(keys.flatMap((k) => k.keyIds));
  const anonymous = recipients.includes(WILDCARD_KEY_ID);
  if (!anonymous && !recipients.some((id) => ours.has(id))) throw wrongKey(recipients, keys, opts);
  try {
    const verify = input instanceof Uint8Array ? opts.verify : undefined;
    const result = await decrypt({
      message,
      decryptionKeys: keys.map((k) => k.key as PrivateKey),
      ...(verify ? { verificationKeys: await trustedKeyObjects(verify.trust.trusted) } : {}),
      format: 'binary',
      // the producer's clock may be ahead of ours: signature times are not checked against it
      ...(verify ? { date: null as unknown as Date } : {}),
      config: DECRYPT_CONFIG,
    });
    if (verify) await checkInsideSignatures(result.signatures, verify);
    return result.data as Uint8Array | ReadableStream<Uint8Array>;
  } catch (e) {
    // With anonymous recipients we learn only now that no key of ours fits.
    if (anonymous && /session key/i.test(detail(e))) throw wrongKey(recipients, keys, opts);
    throw damaged(e);
  }
}

/**
 * Anything that goes wrong once a key of ours matched is the data's fault: bad MDC
 * (tampered), cut-off packets (truncated), garbage in the session key packet.
 */
export function damaged(e: unknown, what = 'it is damaged, was tampered with, or is truncated'): Error {
  if (isDbcrateError(e) || isAbort(e)) return e as Error;
  return new DbcrateError(ErrorCodes.INTEGRITY, `cannot decrypt: ${what} (${detail(e)})`, {
    hint: 'Check the object against its manifest sha256; restore from another snapshot if it is corrupt.',
    cause: e,
  });
}

export function wrongKey(recipients: string[], keys: DecryptionKey[], opts: DecryptOptions): DbcrateError {
  const named = recipients.length
    ? `encrypted to key ID${recipients.length > 1 ? 's' : ''} ${recipients.join(', ')}`
    : 'not encrypted to any public key (a passphrase-only message?)';
  const recorded = opts.expectedRecipients?.length
    ? ` (recorded recipients: ${opts.expectedRecipients.map((f) => f.toUpperCase()).join(', ')})`
    : '';
  const given = keys.map((k) => `${k.fingerprint} (key IDs ${k.keyIds.join(', ')})`).join('; ');
  return new DbcrateError(
    ErrorCodes.WRONG_KEY,
    `this data is ${named}${recorded}; the private key given is ${given}, which is not one of them`,
    {
      hint:
        'Use the private key whose encryption subkey has one of those key IDs ' +
        '(gpg --list-secret-keys --keyid-format long shows them).',
    },
  );
}
