import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/**
 * Options come from three places; the first that has a value wins:
 *   1. command-line flags,
 *   2. environment variables `DBCRATE_<SETTING>` (e.g. DBCRATE_DATABASE_ID),
 *   3. the YAML file given by `--config FILE` (or DBCRATE_CONFIG), keys in kebab-case or camelCase.
 * Validation happens once, here, and names the setting that is wrong.
 */
export type ConfigFile = Record<string, unknown>;

export function loadConfigFile(path: string | undefined): ConfigFile {
  if (!path) return {};
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new DbcrateError(ErrorCodes.CONFIG, `cannot read config file ${path}: ${(e as Error).message}`, {
      hint: 'check the path given to --config (or DBCRATE_CONFIG)',
    });
  }
  let doc: unknown;
  try {
    // Loaded only when a config file is read, so that other commands start faster.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- synchronous lazy load
    const { parse: parseYaml } = require('yaml') as typeof import('yaml');
    doc = parseYaml(text);
  } catch (e) {
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `config file ${path} is not valid YAML: ${(e as Error).message}`,
    );
  }
  if (doc == null) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new DbcrateError(ErrorCodes.CONFIG, `config file ${path} must be a YAML mapping of setting: value`);
  }
  return doc as ConfigFile;
}

export function envName(setting: string): string {
  return 'DBCRATE_' + kebab(setting).replace(/-/g, '_').toUpperCase();
}

function kebab(s: string): string {
  return s.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
}

function fromFile(file: ConfigFile, key: string): unknown {
  if (key in file) return file[key];
  const k = kebab(key);
  if (k in file) return file[k];
  const snake = k.replace(/-/g, '_');
  if (snake in file) return file[snake];
  return undefined;
}

/**
 * Merge flags, environment and file for the settings a command declares in `schema`,
 * then validate. `flags` are commander's parsed options (camelCase); a flag left at
 * undefined falls through to env and file. Array settings accept a comma-separated env var.
 */
export function resolveSettings<S extends z.ZodObject>(
  schema: S,
  sources: { flags: Record<string, unknown>; env?: NodeJS.ProcessEnv; file?: ConfigFile },
): z.infer<S> {
  const env = sources.env ?? process.env;
  const file = sources.file ?? {};
  const merged: Record<string, unknown> = {};
  for (const key of Object.keys(schema.shape)) {
    const flag = sources.flags[key];
    const isEmptyArray = Array.isArray(flag) && flag.length === 0;
    if (flag !== undefined && !isEmptyArray) {
      merged[key] = flag;
      continue;
    }
    const ev = env[envName(key)];
    if (ev !== undefined && ev !== '') {
      merged[key] = isArraySetting(schema, key)
        ? ev
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : ev;
      continue;
    }
    const fv = fromFile(file, key);
    if (fv !== undefined) merged[key] = fv;
  }
  const parsed = schema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const key = String(issue.path[0] ?? '');
    const where = `--${kebab(key)}, ${envName(key)}, or "${kebab(key)}:" in the --config file`;
    if (merged[key] === undefined) {
      const about = describeSetting(schema, key);
      throw new DbcrateError(ErrorCodes.CONFIG, `missing --${kebab(key)}${about ? ` (${about})` : ''}`, {
        hint: `give it as ${where}`,
      });
    }
    const from =
      sources.flags[key] !== undefined ? 'the flag' : env[envName(key)] ? envName(key) : 'the config file';
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `setting "${kebab(key)}" (from ${from}) is invalid: ${issueText(issue)}`,
      { hint: `give it as ${where}` },
    );
  }
  return parsed.data;
}

/** What a setting is for: its zod description, else the message of its `min(1, …)`. */
function describeSetting(schema: z.ZodObject, key: string): string | undefined {
  const t = schema.shape[key] as z.ZodType;
  if (t.description) return t.description;
  const checks = (t as unknown as { def?: { checks?: { _zod?: { def?: { error?: unknown } } }[] } }).def
    ?.checks;
  for (const c of checks ?? []) {
    const err = c._zod?.def?.error;
    if (typeof err === 'function') {
      const text = (err as () => unknown)();
      if (typeof text === 'string') return text;
    }
  }
  return undefined;
}

/** zod's issue in words a user reads: "expected a number" rather than "Invalid input: …". */
function issueText(issue: z.core.$ZodIssue): string {
  if (issue.code === 'invalid_type') return `expected ${article(issue.expected)}`;
  if (issue.code === 'invalid_value' && 'values' in issue) {
    return `expected one of ${(issue.values as unknown[]).map(String).join(', ')}`;
  }
  return issue.message.replace(/^Invalid input: /, '');
}

function article(t: string): string {
  return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`;
}

/**
 * Refuse settings in a config file that no command knows, naming the closest known one:
 * a misspelt key ("recipients:") must not silently mean "not set". `known` holds the
 * settings' kebab-case names.
 */
export function checkConfigKeys(
  file: ConfigFile,
  known: ReadonlySet<string>,
  path: string | undefined,
): void {
  for (const raw of Object.keys(file)) {
    const k = kebab(raw).replace(/_/g, '-');
    if (known.has(k)) continue;
    const near = closest(k, known);
    throw new DbcrateError(
      ErrorCodes.CONFIG,
      `unknown setting "${raw}" in config file ${path ?? ''}`.trimEnd(),
      {
        hint: near ? `did you mean "${near}"?` : 'remove it; `dbcrate <command> --help` lists the settings',
      },
    );
  }
}

function closest(word: string, options: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const o of options) {
    const d = editDistance(word, o);
    if (d < bestD) [best, bestD] = [o, d];
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

function isArraySetting(schema: z.ZodObject, key: string): boolean {
  let t = schema.shape[key] as z.ZodType;
  // unwrap optional/default wrappers
  for (let i = 0; i < 4; i++) {
    const def = (t as unknown as { def?: { type?: string; innerType?: z.ZodType } }).def;
    if (!def) break;
    if (def.type === 'array') return true;
    if (def.innerType) t = def.innerType;
    else break;
  }
  return false;
}

/** Coerce "true"/"false"/"on"/"off"/"1"/"0" from env or YAML into a boolean. */
export const booleanSetting = z.preprocess((v) => {
  if (typeof v === 'string') {
    const s = v.trim().toLowerCase();
    if (['1', 'true', 'on', 'yes'].includes(s)) return true;
    if (['0', 'false', 'off', 'no'].includes(s)) return false;
  }
  return v;
}, z.boolean());

export const intSetting = (min: number, max: number) =>
  z.preprocess(
    (v) => (typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v),
    z.number().int().min(min).max(max),
  );
