import { createCipheriv, type Cipher } from 'node:crypto';

const BLOCK = 16;

/**
 * AES-CFB decryption as ECB encryption of the previous ciphertext blocks XORed with the
 * ciphertext: unlike a CFB decipher, whose blocks go through AES one at a time, ECB over a
 * whole chunk is pipelined by OpenSSL. Takes chunks of any length and returns as many
 * bytes as it was given (a partial block is decrypted with the keystream already known).
 */
export class CfbDecipher {
  private readonly ecb: Cipher;
  /** Keystream for the current block: the encryption of the previous ciphertext block. */
  private ks: Buffer;
  /** Ciphertext of the current block so far (`used` bytes). */
  private readonly cur = Buffer.alloc(BLOCK);
  private used = 0;

  constructor(ecbAlgorithm: string, key: Uint8Array, iv: Uint8Array) {
    this.ecb = createCipheriv(ecbAlgorithm, key, null);
    this.ecb.setAutoPadding(false);
    this.ks = this.ecb.update(iv);
  }

  update(ct: Buffer): Buffer {
    const n = ct.length;
    let i = 0;
    const head = this.used > 0 ? Math.min(n, BLOCK - this.used) : 0;
    const full = (n - head) & ~(BLOCK - 1);
    // The block-aligned middle starts 4-byte aligned in the output, for the word XOR.
    const pad = (4 - (head % 4)) % 4;
    const out = Buffer.from(new ArrayBuffer(n + pad), pad, n);
    for (; i < head; i++) this.take(out, ct, i);
    if (full > 0) {
      // Keystream of block k is E(C[k-1]): the held one, then E of all blocks but the last.
      const e = this.ecb.update(ct.subarray(i, i + full));
      ct.copy(out, i, i, i + full);
      xorWords(out, i, this.ks, 0, BLOCK);
      if (full > BLOCK) xorWords(out, i + BLOCK, e, 0, full - BLOCK);
      this.ks = e.subarray(full - BLOCK);
      i += full;
    }
    for (; i < n; i++) this.take(out, ct, i);
    return out;
  }

  /** CFB has no padding: nothing is left over. */
  final(): Buffer {
    return Buffer.alloc(0);
  }

  private take(out: Buffer, ct: Buffer, i: number): void {
    out[i] = ct[i] ^ this.ks[this.used];
    this.cur[this.used++] = ct[i];
    if (this.used === BLOCK) {
      this.ks = this.ecb.update(this.cur);
      this.used = 0;
    }
  }
}

/** out[o..o+len) ^= src[s..s+len), 32 bits at a time when both are aligned. */
function xorWords(out: Buffer, o: number, src: Buffer, s: number, len: number): void {
  const oa = out.byteOffset + o;
  const sa = src.byteOffset + s;
  if (oa % 4 === 0 && sa % 4 === 0) {
    const words = len >> 2;
    const a = new Int32Array(out.buffer, oa, words);
    const b = new Int32Array(src.buffer, sa, words);
    for (let k = 0; k < words; k++) a[k] ^= b[k];
    for (let k = words << 2; k < len; k++) out[o + k] ^= src[s + k];
    return;
  }
  for (let k = 0; k < len; k++) out[o + k] ^= src[s + k];
}
