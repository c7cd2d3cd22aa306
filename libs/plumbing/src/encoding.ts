/** How a stored object was compressed and encrypted, as every manifest records it. */
export function describeEncoding(
  codec: { name: string; implementation: string },
  level: number,
  cipher: { name: string },
  recipients: { fingerprint: string; encryptionKeyIds: string[] }[],
): {
  compression: { codec: string; implementation: string; level: number };
  encryption: { cipher: string; recipients: { fingerprint: string; encryptionKeyIds: string[] }[] };
} {
  return {
    compression: { codec: codec.name, implementation: codec.implementation, level },
    encryption: {
      cipher: cipher.name,
      recipients: recipients.map((r) => ({
        fingerprint: r.fingerprint,
        encryptionKeyIds: r.encryptionKeyIds,
      })),
    },
  };
}
