import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, isDbcrateError } from '@dbcrate/core';
import {
  createAgentCa,
  createAgentCsr,
  createAgentKeys,
  publicKeyFingerprint,
  signAgentCsr,
  verifyAgentCertificate,
} from './identity.ca';

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (isDbcrateError(e)) return e.code;
    throw e;
  }
  throw new Error('expected a failure');
}

describe('agent identity (X.509, read back by openssl)', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'dbcrate-identity-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('signs an agent CSR into a client certificate that openssl verifies against the CA only', async () => {
    const ca = await createAgentCa({ orgId: 'org-1' });
    const other = await createAgentCa({ orgId: 'org-2' });
    const agent = await createAgentKeys();
    const csr = await createAgentCsr(agent.keys, { host: 'db-host-1' });
    const issued = await signAgentCsr(ca, csr, { agentId: 'agent-7', orgId: 'org-1' });
    expect(issued.subject).toBe('CN=agent-7,O=org-1');
    expect(await verifyAgentCertificate(ca, issued.certPem)).toBe(true);
    expect(await verifyAgentCertificate(other, issued.certPem)).toBe(false);
    expect(issued.fingerprint).toBe(await publicKeyFingerprint(issued.certPem));

    writeFileSync(join(dir, 'ca.pem'), ca.certPem);
    writeFileSync(join(dir, 'other.pem'), other.certPem);
    writeFileSync(join(dir, 'agent.pem'), issued.certPem);
    const ok = execFileSync('openssl', [
      'verify',
      '-purpose',
      'sslclient',
      '-CAfile',
      join(dir, 'ca.pem'),
      join(dir, 'agent.pem'),
    ]);
    expect(ok.toString()).toMatch(/agent\.pem: OK/);
    const bad = spawnSync('openssl', ['verify', '-CAfile', join(dir, 'other.pem'), join(dir, 'agent.pem')], {
      encoding: 'utf8',
    });
    expect(bad.status).not.toBe(0);
    const text = execFileSync('openssl', [
      'x509',
      '-in',
      join(dir, 'agent.pem'),
      '-noout',
      '-text',
    ]).toString();
    expect(text).toMatch(/CA:FALSE/);
    expect(text).toMatch(/TLS Web Client Authentication/);
    expect(text).toMatch(/Subject: CN ?= ?agent-7, O ?= ?org-1/);
    // The private key is the agent's, in a form openssl reads; the certificate carries its public half.
    writeFileSync(join(dir, 'agent.key'), agent.privateKeyPem, { mode: 0o600 });
    const fromKey = execFileSync('openssl', ['pkey', '-in', join(dir, 'agent.key'), '-pubout']).toString();
    const fromCert = execFileSync('openssl', [
      'x509',
      '-in',
      join(dir, 'agent.pem'),
      '-noout',
      '-pubkey',
    ]).toString();
    expect(fromKey).toBe(fromCert);
  });

  it('refuses a CSR that is not one, or not signed by the key it carries, or names a subject of its own', async () => {
    const ca = await createAgentCa({ orgId: 'org-1' });
    expect(await code(signAgentCsr(ca, 'not a csr', { agentId: 'a', orgId: 'org-1' }))).toBe(
      ErrorCodes.USAGE,
    );
    const agent = await createAgentKeys();
    const csr = await createAgentCsr(agent.keys, { host: 'h' });
    const der = Buffer.from(csr.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 5] ^= 0xff; // the signature
    const forged = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    expect(['E_INTEGRITY', 'E_USAGE']).toContain(
      await code(signAgentCsr(ca, forged, { agentId: 'a', orgId: 'org-1' })),
    );
    // Names are tokens: nothing that could read as another DN component.
    expect(await code(signAgentCsr(ca, csr, { agentId: 'a,O=org-2', orgId: 'org-1' }))).toBe(
      ErrorCodes.USAGE,
    );
  });

  it('issues certificates that expire', async () => {
    const ca = await createAgentCa({ orgId: 'org-1' });
    const agent = await createAgentKeys();
    const issued = await signAgentCsr(ca, await createAgentCsr(agent.keys, { host: 'h' }), {
      agentId: 'a',
      orgId: 'org-1',
      validityDays: 1,
    });
    expect(await verifyAgentCertificate(ca, issued.certPem, new Date(Date.now() + 2 * 86_400_000))).toBe(
      false,
    );
  });
});
