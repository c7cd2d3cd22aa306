import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import {
  createMessage,
  decryptSessionKeys,
  encryptSessionKey,
  readMessage,
  sign,
  verify,
  type PrivateKey,
} from 'openpgp';
import { DbcrateError, ErrorCodes, isDbcrateError } from '@dbcrate/core';
import type {
  Cipher,
  DecryptOptions,
  DecryptionKey,
  EncryptSession,
  RecipientKey,
  SignInsideOptions,
} from './cipher';
import { recipientPublicKey } from './keys';
import { NativeDecryptStream, UnsupportedCompressionError, type SessionKey } from './native-decrypt.stream';
import { NativeEncryptStream, SeipdSession, literalHeader, sealBuffer } from './native-encrypt.stream';
import { SignatureWriter, nativeSigner, onePassSignature } from './native-sign';
import { verifyInsideNative } from './native-verify';
import { DECRYPT_CONFIG, ENCRYPT_CONFIG } from './openpgp.config';
import { OpenPgpCipher, damaged, detail, requireKeys, wrongKey } from './openpgp.cipher';
import { WILDCARD_KEY_ID, pkeskRecipient } from './pgp-header.parser';
import { checkInsideSignatures, notationsOf, signingKeyObject, trustedKeyObjects } from './signing';

function noRecipients(): DbcrateError {
  return new DbcrateError(
    ErrorCodes.CONFIG,
    'no recipient public key given: backups must be encrypted to one',
    {
      hint: 'Pass the organisation public key (--recipient FILE); several keys are allowed during key rotation.',
    },
  );
}

function encryptionFailed(e: unknown): Error {
  if (isDbcrateError(e)) return e;
  return new DbcrateError(
    /key/i.test(detail(e)) ? ErrorCodes.KEY_INVALID : ErrorCodes.INTERNAL,
    `encryption failed: ${detail(e)}`,
    { cause: e },
  );
}

/** One PKESK v3 per recipient for a fresh AES-256 session key (openpgp.js does the public-key part). */
async function sessionPackets(recipients: RecipientKey[]): Promise<{ pkesks: Buffer; sessionKey: Buffer }> {
  try {
    const sessionKey = randomBytes(32);
    const encryptionKeys = await Promise.all(recipients.map(recipientPublicKey));
    const pkesks = await encryptSessionKey({
      data: sessionKey,
      // always AES-256, whatever cipher preferences the recipient keys list
      algorithm: 'aes256',
      encryptionKeys,
      format: 'binary',
      config: ENCRYPT_CONFIG,
    });
    return { pkesks: Buffer.from(pkesks), sessionKey };
  } catch (e) {
    throw encryptionFailed(e);
  }
}

/** The session key from PKESK packets, with today's E_WRONG_KEY / E_INTEGRITY wording. */
function unlocker(keys: DecryptionKey[], opts: DecryptOptions) {
  return async (pkesks: Buffer[]): Promise<SessionKey> => {
    const recipients = pkesks.map((p) => pkeskRecipient(p.subarray(p[1] < 192 ? 2 : p[1] < 224 ? 3 : 6)));
    const ours = new Set(keys.flatMap((k) => k.keyIds));
    const anonymous = recipients.includes(WILDCARD_KEY_ID);
    if (!anonymous && !recipients.some((id) => ours.has(id))) throw wrongKey(recipients, keys, opts);
    try {
      const message = await readMessage({ binaryMessage: Buffer.concat(pkesks), config: DECRYPT_CONFIG });
      const [sk] = await decryptSessionKeys({
        message,
        decryptionKeys: keys.map((k) => k.key as PrivateKey),
        config: DECRYPT_CONFIG,
      });
      if (!sk?.algorithm) throw new Error('Session key decryption failed.');
      return { algorithm: sk.algorithm, data: sk.data };
    } catch (e) {
      // With anonymous recipients we learn only now that no key of ours fits.
      if (anonymous && /session key/i.test(detail(e))) throw wrongKey(recipients, keys, opts);
      throw damaged(e);
    }
  };
}

function collect(stream: Duplex, input: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    stream.on('data', (b: Buffer) => out.push(b));
    stream.once('error', reject);
    stream.once('end', () => resolve(Buffer.concat(out)));
    stream.end(Buffer.from(input.buffer, input.byteOffset, input.byteLength));
  });
}

/**
 * OpenPGP written and read directly on node:crypto (AES-CFB, SHA-1) with Node streams;
 * openpgp.js does only the key packets (PKESK) and signatures. The same message format as
 * OpenPgpCipher (docs/format.md): PKESK v3 per recipient, SEIPD v1, AES-256, no compression.
 * Reads what gpg writes too: AES-128/192/256, ZIP/ZLIB compression (BZip2 only in
 * decryptBuffer, through openpgp.js), marker packets; refuses SED and AEAD messages.
 */
export class NativeOpenPgpCipher implements Cipher {
  readonly name = 'openpgp';
  readonly extension = 'pgp';
  readonly implementation = 'native';
  private fallback?: OpenPgpCipher;

  encryptor(recipients: RecipientKey[]): Duplex {
    if (recipients.length === 0) throw noRecipients();
    return new NativeEncryptStream(sessionPackets(recipients));
  }

  async encryptSession(recipients: RecipientKey[]): Promise<EncryptSession> {
    if (recipients.length === 0) throw noRecipients();
    const { pkesks, sessionKey } = await sessionPackets(recipients);
    return new SeipdSession(pkesks, sessionKey);
  }

  decryptor(keys: DecryptionKey[], opts: DecryptOptions = {}): Duplex {
    requireKeys(keys);
    return new NativeDecryptStream(unlocker(keys, opts));
  }

  async encryptBuffer(
    data: Uint8Array,
    recipients: RecipientKey[],
    signOpts?: SignInsideOptions,
  ): Promise<Uint8Array> {
    if (recipients.length === 0) throw noRecipients();
    const { pkesks, sessionKey } = await sessionPackets(recipients);
    const plain = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (!signOpts) {
      return sealBuffer(pkesks, sessionKey, (write) => {
        write(literalHeader(plain.length));
        write(plain);
      });
    }
    let inner: Buffer;
    try {
      const now = new Date();
      const signer = await nativeSigner(signOpts.signingKey, now);
      if (signer) {
        // one-pass signature, literal data, signature, hashed as it is encrypted
        const sig = new SignatureWriter(signer, signOpts.notations, now);
        return sealBuffer(pkesks, sessionKey, (write) => {
          write(onePassSignature(signer));
          write(literalHeader(plain.length));
          write(plain, (slice) => sig.update(slice));
          write(sig.packet());
        });
      }
      // another key type: the same packets, from openpgp.js
      inner = Buffer.from(
        await sign({
          message: await createMessage({ binary: plain, format: 'binary' }),
          signingKeys: await signingKeyObject(signOpts.signingKey),
          signatureNotations: notationsOf(signOpts.notations),
          format: 'binary',
          config: ENCRYPT_CONFIG,
        }),
      );
    } catch (e) {
      throw encryptionFailed(e);
    }
    return sealBuffer(pkesks, sessionKey, (write) => write(inner));
  }

  async decryptBuffer(
    data: Uint8Array,
    keys: DecryptionKey[],
    opts: DecryptOptions = {},
  ): Promise<Uint8Array> {
    requireKeys(keys);
    const unlock = unlocker(keys, opts);
    if (!opts.verify) {
      try {
        return await collect(new NativeDecryptStream(unlock), data);
      } catch (e) {
        if (e instanceof UnsupportedCompressionError && e.algorithm === 3) {
          this.fallback ??= new OpenPgpCipher();
          return this.fallback.decryptBuffer(data, keys, opts);
        }
        throw e;
      }
    }
    // the inner packets, MDC checked; openpgp.js checks the signature over them
    const inner = await collect(new NativeDecryptStream(unlock, { rawInner: true }), data);
    // what dbcrate signs (Ed25519, one signature) is checked on node:crypto; the rest by openpgp.js
    const native = await verifyInsideNative(inner, opts.verify);
    if (native) return native.data;
    let result;
    try {
      const message = await readMessage({ binaryMessage: inner, config: DECRYPT_CONFIG });
      result = await verify({
        message,
        verificationKeys: await trustedKeyObjects(opts.verify.trust.trusted),
        format: 'binary',
        // the producer's clock may be ahead of ours: signature times are not checked against it
        date: null as unknown as Date,
        config: DECRYPT_CONFIG,
      });
    } catch (e) {
      throw damaged(e);
    }
    await checkInsideSignatures(result.signatures, opts.verify);
    return result.data;
  }
}
