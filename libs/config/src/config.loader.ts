import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
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
    throw new DbcrateError(ErrorCodes.CONFIG, `setting "${kebab(key)}" is invalid: ${issue.message}`, {
      hint: `give it as --${kebab(key)}, as ${envName(key)}, or as "${kebab(key)}:" in the --config file`,
    });
  }
  return parsed.data;
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
