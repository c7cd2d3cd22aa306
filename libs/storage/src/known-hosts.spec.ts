import { createHash, createHmac } from 'node:crypto';
import {
  fingerprintOf,
  hostKeyAlgorithmsFor,
  keyTypeOf,
  knownHostEntries,
  sameFingerprint,
} from './known-hosts';

/** An SSH wire-format key blob: string(type) string(payload). */
function blob(type: string, payload: Buffer): Buffer {
  const t = Buffer.from(type);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(t.length);
  const plen = Buffer.alloc(4);
  plen.writeUInt32BE(payload.length);
  return Buffer.concat([head, t, plen, payload]);
}

const ED = blob('ssh-ed25519', Buffer.alloc(32, 1));
const ED2 = blob('ssh-ed25519', Buffer.alloc(32, 2));
const RSA = blob('ssh-rsa', Buffer.alloc(64, 3));

describe('known_hosts', () => {
  it('fingerprints like ssh-keygen -l (SHA256, unpadded base64)', () => {
    const fp = fingerprintOf(ED);
    expect(fp).toBe(`SHA256:${createHash('sha256').update(ED).digest('base64').replace(/=+$/, '')}`);
    expect(fp).not.toMatch(/=$/);
    expect(sameFingerprint(fp, `${fp}=`)).toBe(true);
    expect(keyTypeOf(ED)).toBe('ssh-ed25519');
    expect(keyTypeOf(Buffer.alloc(2))).toBe('unknown');
  });

  it('finds plain entries for port 22 and [host]:port entries otherwise', () => {
    const text = [
      '# comment',
      `db.example.com,10.0.0.5 ssh-ed25519 ${ED.toString('base64')}`,
      `[db.example.com]:2222 ssh-rsa ${RSA.toString('base64')} comment here`,
      `other.example.com ssh-ed25519 ${ED2.toString('base64')}`,
      '',
    ].join('\n');
    expect(knownHostEntries(text, 'db.example.com', 22).map((e) => e.key.equals(ED))).toEqual([true]);
    expect(knownHostEntries(text, '10.0.0.5', 22)).toHaveLength(1);
    const p2222 = knownHostEntries(text, 'db.example.com', 2222);
    expect(p2222.map((e) => e.keyType)).toEqual(['ssh-rsa']);
    expect(knownHostEntries(text, 'nowhere', 22)).toEqual([]);
  });

  it('understands hashed entries, wildcards, negation and markers', () => {
    const salt = Buffer.alloc(20, 9);
    const hash = createHmac('sha1', salt).update('[127.0.0.1]:2200').digest('base64');
    const text = [
      `|1|${salt.toString('base64')}|${hash} ssh-ed25519 ${ED.toString('base64')}`,
      `*.internal,!bad.internal ssh-ed25519 ${ED2.toString('base64')}`,
      `@revoked * ssh-rsa ${RSA.toString('base64')}`,
    ].join('\n');
    expect(knownHostEntries(text, '127.0.0.1', 2200).filter((e) => !e.marker)).toHaveLength(1);
    expect(knownHostEntries(text, '127.0.0.1', 2201).filter((e) => !e.marker)).toHaveLength(0);
    expect(knownHostEntries(text, 'db.internal', 22).filter((e) => !e.marker)).toHaveLength(1);
    expect(knownHostEntries(text, 'bad.internal', 22).filter((e) => !e.marker)).toHaveLength(0);
    expect(knownHostEntries(text, 'anything', 22).filter((e) => e.marker === '@revoked')).toHaveLength(1);
  });

  it('offers the host key algorithms of the known key types', () => {
    expect(hostKeyAlgorithmsFor(['ssh-ed25519'])).toEqual(['ssh-ed25519']);
    expect(hostKeyAlgorithmsFor(['ssh-rsa', 'ssh-ed25519'])).toEqual([
      'rsa-sha2-512',
      'rsa-sha2-256',
      'ssh-rsa',
      'ssh-ed25519',
    ]);
    expect(hostKeyAlgorithmsFor(['ssh-dss'])).toEqual([]);
  });
});
