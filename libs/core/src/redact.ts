/**
 * Secret redaction. Every message that may carry a URL, a connection string or an
 * environment dump goes through `redact` before it reaches a log or a terminal.
 */
const registered = new Set<string>();

/** Remember a secret value (password, key, passphrase) so it is masked wherever it appears. */
export function registerSecret(value: string | undefined | null): void {
  if (value && value.length >= 4) registered.add(value);
}

export const MASK = '***';

const URL_USERINFO = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/\s]*)@/gi;
// Any key whose name says secret: password=, secret_access_key=, X-Amz-Signature=,
// X-Amz-Credential=, X-Amz-Security-Token=, sessionToken: … (in URLs, conninfo, JSON-ish text).
const KV_SECRET =
  /\b([\w.-]*(?:password|passwd|pwd|passphrase|secret|token|signature|credential)[\w.-]*)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&,;'"]+)/gi;
const PRIVATE_KEY_BLOCK =
  /-----BEGIN PGP PRIVATE KEY BLOCK-----[\s\S]*?(-----END PGP PRIVATE KEY BLOCK-----|$)/g;

export function redact(text: string): string {
  let out = text
    .replace(URL_USERINFO, (_m, head: string) => `${head}:${MASK}@`)
    .replace(KV_SECRET, (_m, k: string, sep: string) => `${k}${sep}${MASK}`)
    .replace(PRIVATE_KEY_BLOCK, `[private key ${MASK}]`);
  for (const s of registered) {
    if (out.includes(s)) out = out.split(s).join(MASK);
  }
  return out;
}
