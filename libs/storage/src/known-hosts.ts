import { createHash, createHmac } from 'node:crypto';

/** OpenSSH-style fingerprint of a public key blob: "SHA256:" + unpadded base64 of its sha256. */
export function fingerprintOf(keyBlob: Buffer): string {
  return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

export function sameFingerprint(a: string, b: string): boolean {
  return a.replace(/=+$/, '') === b.replace(/=+$/, '');
}

/** The algorithm name at the start of an SSH public key blob (e.g. "ssh-ed25519"). */
export function keyTypeOf(keyBlob: Buffer): string {
  if (keyBlob.length < 4) return 'unknown';
  const len = keyBlob.readUInt32BE(0);
  return len > 0 && len < 64 && keyBlob.length >= 4 + len
    ? keyBlob.subarray(4, 4 + len).toString('latin1')
    : 'unknown';
}

export interface KnownHostEntry {
  marker?: '@revoked' | '@cert-authority';
  keyType: string;
  key: Buffer;
}

/** The name known_hosts uses for a host: "host" on port 22, "[host]:port" otherwise. */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

function globToRegExp(glob: string): RegExp {
  const re = glob
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${re}$`, 'i');
}

function patternMatches(pattern: string, name: string): boolean {
  if (pattern.startsWith('|1|')) {
    // Hashed entry (HashKnownHosts yes): |1|base64(salt)|base64(HMAC-SHA1(salt, name)).
    const [, , salt, hash] = pattern.split('|');
    if (!salt || !hash) return false;
    const mac = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest('base64');
    return mac === hash;
  }
  return globToRegExp(pattern).test(name);
}

function hostMatches(field: string, name: string): boolean {
  let hit = false;
  for (const p of field.split(',')) {
    if (p.startsWith('!')) {
      if (patternMatches(p.slice(1), name)) return false;
    } else if (patternMatches(p, name)) {
      hit = true;
    }
  }
  return hit;
}

/** known_hosts lines that apply to host:port (plain, wildcard and hashed entries). */
export function knownHostEntries(text: string, host: string, port: number): KnownHostEntry[] {
  const names = [knownHostsName(host, port)];
  const out: KnownHostEntry[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    let marker: KnownHostEntry['marker'];
    if (fields[0] === '@revoked' || fields[0] === '@cert-authority')
      marker = fields.shift() as KnownHostEntry['marker'];
    const [hosts, keyType, b64] = fields;
    if (!hosts || !keyType || !b64) continue;
    if (!names.some((n) => hostMatches(hosts, n))) continue;
    out.push({ marker, keyType, key: Buffer.from(b64, 'base64') });
  }
  return out;
}

/** Host key algorithms to offer for the key types known_hosts lists, so the server picks a known one. */
export function hostKeyAlgorithmsFor(keyTypes: string[]): string[] {
  const map: Record<string, string[]> = {
    'ssh-ed25519': ['ssh-ed25519'],
    'ecdsa-sha2-nistp256': ['ecdsa-sha2-nistp256'],
    'ecdsa-sha2-nistp384': ['ecdsa-sha2-nistp384'],
    'ecdsa-sha2-nistp521': ['ecdsa-sha2-nistp521'],
    'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
  };
  const out: string[] = [];
  for (const t of keyTypes) for (const a of map[t] ?? []) if (!out.includes(a)) out.push(a);
  return out;
}
