import { createCipheriv, randomBytes } from 'node:crypto';
import { CfbDecipher } from './cfb.decipher';

describe('CfbDecipher', () => {
  it('decrypts what an AES-CFB cipher encrypted, in chunks of any length and alignment', () => {
    for (let t = 0; t < 200; t++) {
      const key = randomBytes(32);
      const iv = t % 2 ? Buffer.alloc(16) : randomBytes(16);
      const plain = randomBytes(Math.floor(Math.random() * 5000));
      const ct = createCipheriv('aes-256-cfb', key, iv).update(plain);
      const d = new CfbDecipher('aes-256-ecb', key, iv);
      const parts: Buffer[] = [];
      for (let i = 0; i < ct.length;) {
        const k = Math.min(ct.length - i, 1 + Math.floor(Math.random() * 700));
        const off = t % 4; // unaligned input views too
        const src = Buffer.alloc(k + off);
        ct.copy(src, off, i, i + k);
        const pt = d.update(src.subarray(off));
        expect(pt.length).toBe(k);
        parts.push(pt);
        i += k;
      }
      expect(Buffer.concat([...parts, d.final()]).equals(plain)).toBe(true);
    }
  });

  it('matches for AES-128 and AES-192 keys', () => {
    for (const [bits, bytes] of [
      [128, 16],
      [192, 24],
    ] as const) {
      const key = randomBytes(bytes);
      const iv = Buffer.alloc(16);
      const plain = randomBytes(100_003);
      const ct = createCipheriv(`aes-${bits}-cfb`, key, iv).update(plain);
      const d = new CfbDecipher(`aes-${bits}-ecb`, key, iv);
      expect(
        Buffer.concat([d.update(ct.subarray(0, 65_537)), d.update(ct.subarray(65_537))]).equals(plain),
      ).toBe(true);
    }
  });
});
