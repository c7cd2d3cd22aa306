import 'reflect-metadata';
import { createHash, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/**
 * Agent identity: each organisation has an agent CA; an agent makes its key pair on its host
 * (the private key never leaves it), sends a CSR at enrollment and gets back a client
 * certificate that NATS checks on every connection. ECDSA P-256: what Go's TLS in
 * nats-server verifies natively.
 */
x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;

export interface AgentCa {
  certPem: string;
  /** PKCS#8 PEM: kept by the control plane (0600), used only to sign enrollments. */
  keyPem: string;
}

export interface AgentKeys {
  keys: CryptoKeyPair;
  /** PKCS#8 PEM of the private key, for the agent's 0600 key file. */
  privateKeyPem: string;
}

function pem(label: string, der: ArrayBuffer): string {
  return x509.PemConverter.encode(der, label);
}

export async function createAgentCa(o: {
  orgId: string;
  validityDays?: number;
  now?: Date;
}): Promise<AgentCa> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = o.now ?? new Date();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=dbcrate agent CA ${dnValue(o.orgId)}, O=dbcrate`,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + (o.validityDays ?? 3650) * DAY),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem'), keyPem: pem('PRIVATE KEY', pkcs8) };
}

export async function createAgentKeys(): Promise<AgentKeys> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { keys, privateKeyPem: pem('PRIVATE KEY', pkcs8) };
}

export async function createAgentCsr(keys: CryptoKeyPair, o: { host: string }): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${dnValue(o.host)}`,
    keys,
    signingAlgorithm: ALG,
  });
  return csr.toString('pem');
}

/**
 * The agent's certificate for a CSR: the CSR must be well-formed and signed by the key it
 * carries (proof the agent holds it). The subject is chosen here, never taken from the CSR:
 * CN=<agentId>, O=<orgId>, what the NATS server maps to the agent's permissions.
 */
export async function signAgentCsr(
  ca: AgentCa,
  csrPem: string,
  o: { agentId: string; orgId: string; validityDays?: number; now?: Date },
): Promise<{ certPem: string; fingerprint: string; subject: string }> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch {
    throw new DbcrateError(ErrorCodes.USAGE, 'the certificate request is not a PKCS#10 CSR');
  }
  if (!(await csr.verify())) {
    throw new DbcrateError(
      ErrorCodes.INTEGRITY,
      'the certificate request is not signed by the key it carries',
    );
  }
  const alg = csr.publicKey.algorithm as EcKeyAlgorithm;
  if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') {
    throw new DbcrateError(
      ErrorCodes.USAGE,
      `the agent key must be ECDSA P-256, not ${alg.name} ${alg.namedCurve ?? ''}`.trim(),
    );
  }
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    x509.PemConverter.decodeFirst(ca.keyPem),
    ALG,
    false,
    ['sign'],
  );
  const now = o.now ?? new Date();
  const subject = agentSubject(o.agentId, o.orgId);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - 60_000),
    notAfter: new Date(now.getTime() + (o.validityDays ?? 365) * DAY),
    signingAlgorithm: ALG,
    publicKey: csr.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth], true),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  });
  return {
    certPem: cert.toString('pem'),
    fingerprint: await publicKeyFingerprint(cert.toString('pem')),
    subject,
  };
}

/** The subject NATS maps to an agent (tokens checked: no DN syntax can be smuggled in). */
export function agentSubject(agentId: string, orgId: string): string {
  return `CN=${dnValue(agentId)},O=${dnValue(orgId)}`;
}

/** Whether `certPem` was issued by `ca` and is valid at `at`. */
export async function verifyAgentCertificate(
  ca: AgentCa,
  certPem: string,
  at = new Date(),
): Promise<boolean> {
  const cert = new x509.X509Certificate(certPem);
  const caCert = new x509.X509Certificate(ca.certPem);
  return cert.verify({ publicKey: caCert.publicKey, date: at });
}

/** sha256 (hex) of a certificate's public key: the agent's identity fingerprint. */
export async function publicKeyFingerprint(certPem: string): Promise<string> {
  const cert = new x509.X509Certificate(certPem);
  return createHash('sha256').update(Buffer.from(cert.publicKey.rawData)).digest('hex');
}

function dnValue(v: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(v)) {
    throw new DbcrateError(
      ErrorCodes.USAGE,
      `"${v}" cannot be part of a certificate name (1-128 of A-Z a-z 0-9 . _ -)`,
    );
  }
  return v;
}

function serial(): string {
  // Positive: a leading 0x01 keeps the top bit clear.
  return '01' + Buffer.from(webcrypto.getRandomValues(new Uint8Array(15))).toString('hex');
}
