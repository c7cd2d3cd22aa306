/**
 * Secret redaction. Every message that may carry a URL, a connection string or an
 * environment dump goes through `redact` before it reaches a log or a terminal.
 */
import type { Logger } from 'pino';
import { DbcrateError, ErrorCodes, isErrorCode } from './errors';
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
 * scope with its text already redacted, because outside the scope its secrets are no longer
 * known. The scope hangs off the process scope unless `nested` (see `enterScope`).
 */
export function runInScope<T>(opts: { logger?: Logger; nested?: boolean }, fn: () => Promise<T>): Promise<T> {
  return enterScope(opts, async () => {
    try {
      return await fn();
    } catch (e) {
      throw scrub(e);
    }
  });
}

const TEXT_FIELDS = ['message', 'stack', 'hint', 'detail'] as const;

/**
 * `e` with every text it carries redacted (its cause and an AggregateError's errors too).
 * Some errors' fields cannot be written (DOMException's message is a getter): such an error
 * is replaced by a DbcrateError that keeps its code and the redacted text, never by the
 * TypeError a failed assignment would throw.
 */
function scrub(e: unknown, depth = 0): unknown {
  if (typeof e === 'string') return redact(e);
  if (depth > 8 || typeof e !== 'object' || e === null) return e;
  // Duck-typed: an error of another realm (a vm context, DOMException under a test runner)
  // is no `instanceof Error` here.
  if (!(e instanceof Error) && typeof (e as { message?: unknown }).message !== 'string') {
    try {
      return JSON.parse(redact(JSON.stringify(e))) as unknown;
    } catch {
      return redact(String(e));
    }
  }
  const err = e as Error;
  let writable = true;
  const fields = e as unknown as Record<string, unknown>;
  for (const f of TEXT_FIELDS) {
    const v = fields[f];
    if (typeof v !== 'string') continue;
    const clean = redact(v);
    if (clean !== v && !setField(err, f, clean)) writable = false;
  }
  if (err.cause !== undefined && !setField(err, 'cause', scrub(err.cause, depth + 1))) writable = false;
  const many = (e as { errors?: unknown }).errors;
  if (
    Array.isArray(many) &&
    !setField(
      err,
      'errors',
      many.map((x) => scrub(x, depth + 1)),
    )
  )
    writable = false;
  if (writable) return e;
  const code = (e as { code?: unknown }).code;
  return new DbcrateError(
    isErrorCode(code) ? code : err.name === 'AbortError' ? ErrorCodes.INTERRUPTED : ErrorCodes.INTERNAL,
    redact(err.message),
    { cause: err.cause !== undefined ? scrub(err.cause, depth + 1) : undefined },
  );
}

function setField(e: Error, field: string, value: unknown): boolean {
  try {
    Object.defineProperty(e, field, {
      value,
      writable: true,
      configurable: true,
      enumerable: field !== 'stack',
    });
    return (e as unknown as Record<string, unknown>)[field] === value;
  } catch {
    return false;
  }
}
