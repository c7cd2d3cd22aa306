/**
 * Secret redaction. Every message that may carry a URL, a connection string or an
 * environment dump goes through `redact` before it reaches a log or a terminal.
 */
import type { Logger } from 'pino';
import { enterScope, maskRegistered } from './scope';

export { registerSecret } from './scope';

export const MASK = '***';

const URL_USERINFO = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/\s]*)@/gi;
// Any key whose name says secret: password=, secret_access_key=, X-Amz-Signature=,
// X-Amz-Credential=, X-Amz-Security-Token=, sessionToken: … (in URLs, conninfo, JSON-ish text).
const KV_SECRET =
  /\b([\w.-]*(?:password|passwd|pwd|passphrase|secret|token|signature|credential)[\w.-]*)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&,;'"]+)/gi;
const PRIVATE_KEY_BLOCK =
  /-----BEGIN PGP PRIVATE KEY BLOCK-----[\s\S]*?(-----END PGP PRIVATE KEY BLOCK-----|$)/g;

export function redact(text: string): string {
  const out = text
    .replace(URL_USERINFO, (_m, head: string) => `${head}:${MASK}@`)
    .replace(KV_SECRET, (_m, k: string, sep: string) => `${k}${sep}${MASK}`)
    .replace(PRIVATE_KEY_BLOCK, `[private key ${MASK}]`);
  return maskRegistered(out, MASK);
}

/**
 * Run `fn` (a job) in its own work scope, with `logger` as its logger: the secrets it
 * registers are masked in what it logs and dropped with it. An error it throws leaves the
 * scope with its message and stack already redacted, because outside the scope its secrets
 * are no longer known.
 */
export function runInScope<T>(opts: { logger?: Logger }, fn: () => Promise<T>): Promise<T> {
  return enterScope(opts, async () => {
    try {
      return await fn();
    } catch (e) {
      throw scrub(e);
    }
  });
}

function scrub(e: unknown, depth = 0): unknown {
  if (depth > 8 || !(e instanceof Error)) return typeof e === 'string' ? redact(e) : e;
  e.message = redact(e.message);
  if (e.stack) e.stack = redact(e.stack);
  const hinted = e as { hint?: unknown };
  if (typeof hinted.hint === 'string') hinted.hint = redact(hinted.hint);
  if (e.cause !== undefined) e.cause = scrub(e.cause, depth + 1);
  return e;
}
