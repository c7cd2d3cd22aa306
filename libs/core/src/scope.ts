import { AsyncLocalStorage } from 'node:async_hooks';
import type { Logger } from 'pino';

/**
 * What one unit of work (a CLI command, one job of a daemon) owns: the secrets it has seen
 * and its logger. A daemon runs each job in its own scope (`runInScope`), so a job's secrets
 * are masked in its own logs and forgotten with it, and two jobs never share a logger or a
 * registry that grows for the life of the process. Code outside any scope (the CLI, tests)
 * uses the process scope.
 */
export interface WorkScope {
  /** Secret values registered while this scope was current (see `registerSecret`). */
  readonly secrets: Set<string>;
  readonly logger?: Logger;
  /** The scope this one was opened in: its secrets and logger hold here too. */
  readonly parent?: WorkScope;
}

const processScope: WorkScope = { secrets: new Set() };
const storage = new AsyncLocalStorage<WorkScope>();

/** The scope of the work running now (the process scope outside of any). */
export function currentScope(): WorkScope {
  return storage.getStore() ?? processScope;
}

/**
 * Run `fn` in a new scope (see `runInScope`, which callers use). It hangs off the process
 * scope, not off whatever scope is current: a job started from another job's callback (a
 * queue, a timer, a server made inside a job) must not inherit that job's secrets and
 * logger, nor keep it alive. `nested` opens it under the current scope instead.
 */
export function enterScope<T>(opts: { logger?: Logger; nested?: boolean }, fn: () => T): T {
  const scope: WorkScope = {
    secrets: new Set(),
    logger: opts.logger,
    parent: opts.nested ? currentScope() : processScope,
  };
  return storage.run(scope, fn);
}

/**
 * Remember a secret value (password, key, passphrase) so it is masked wherever it appears in
 * the work that registered it: its scope and the scopes it opens.
 */
export function registerSecret(value: string | undefined | null): void {
  if (value && value.length >= 4) currentScope().secrets.add(value);
}

/** `text` with every secret the current scope (or one it was opened in) knows masked. */
export function maskRegistered(text: string, mask: string): string {
  let out = text;
  for (let scope: WorkScope | undefined = currentScope(); scope; scope = scope.parent) {
    for (const s of scope.secrets) {
      if (out.includes(s)) out = out.split(s).join(mask);
    }
  }
  return out;
}

/** The logger of the nearest scope that has one. */
export function scopeLogger(): Logger | undefined {
  for (let s: WorkScope | undefined = currentScope(); s; s = s.parent) if (s.logger) return s.logger;
  return undefined;
}

/** Replace the process scope's logger (the CLI does this once it has read its settings). */
export function setProcessLogger(l: Logger | undefined): void {
  (processScope as { logger?: Logger }).logger = l;
}
