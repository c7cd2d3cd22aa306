import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { DbcrateError, ErrorCodes, redact } from '@dbcrate/core';

const execFileP = promisify(execFile);

/** Where Debian's postgresql-client-<major> packages put their binaries. */
export const DEBIAN_PG_LIB = '/usr/lib/postgresql';

/** The PostgreSQL major that each Debian release ships in its own archive. */
const DEBIAN_SHIPS: Readonly<Record<string, number>> = { '11': 13, '12': 15, '13': 17 };

export interface ClientTools {
  binDir: string;
  pgDump: string;
  pgRestore: string;
  psql: string;
  pgBasebackup: string;
  /** pg_dump's version, e.g. "15.14". */
  version: string;
  /** Major version of the tools (15, or 9.6 for 9.6.x). */
  major: number;
  /** True when the tools' major equals the server's. */
  exactMatch: boolean;
  /** Set when a newer major is used because the exact one is not installed. */
  note?: string;
}

export interface FindClientToolsOptions {
  /** A configured directory holding pg_dump & co; takes precedence over discovery. */
  binDir?: string;
  /** Where per-major directories live (`<root>/<major>/bin`); Debian's layout by default. */
  searchRoot?: string;
}

const TOOLS = {
  pgDump: 'pg_dump',
  pgRestore: 'pg_restore',
  psql: 'psql',
  pgBasebackup: 'pg_basebackup',
} as const;

/** "15.14" → 15, "9.6.24" → 9.6, "17beta1" → 17. */
export function majorOfVersion(version: string): number {
  const m = /^(\d+)(?:\.(\d+))?/.exec(version);
  if (!m) return NaN;
  const first = Number(m[1]);
  return first >= 10 ? first : Number(`${first}.${m[2] ?? 0}`);
}

/** Parse `pg_dump --version` output: "pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)". */
export function parseToolVersion(output: string): string | undefined {
  return /\(PostgreSQL\)\s+(\d+(?:\.\d+)*(?:[a-z]+\d*)?)/.exec(output)?.[1];
}

/** How to get the client tools for `major` on this machine, for hints. */
export function installHint(major: number, osRelease = readOsRelease()): string {
  const pkg = `postgresql-client-${major}`;
  const shipped = osRelease.id === 'debian' ? DEBIAN_SHIPS[osRelease.versionId ?? ''] : undefined;
  const install = `apt-get install ${pkg}`;
  if (shipped === major) return `Install them: ${install}.`;
  const release =
    osRelease.id === 'debian' && osRelease.versionId ? `Debian ${osRelease.versionId}` : 'your distribution';
  return (
    `Install them: ${install}. PostgreSQL ${major} is not in ${release}'s own archive: first add the ` +
    `PostgreSQL project's signed apt repository (PGDG, https://wiki.postgresql.org/wiki/Apt: ` +
    `apt-get install postgresql-common && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh). ` +
    `Or configure a client tool directory that holds pg_dump ${major} or newer.`
  );
}

function readOsRelease(): { id?: string; versionId?: string } {
  try {
    const text = fs.readFileSync('/etc/os-release', 'utf8');
    const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm').exec(text)?.[1];
    return { id: get('ID'), versionId: get('VERSION_ID') };
  } catch {
    return {};
  }
}

async function toolVersion(pgDump: string): Promise<string> {
  let out: string;
  try {
    out = (await execFileP(pgDump, ['--version'], { timeout: 15_000 })).stdout;
  } catch (e) {
    throw new DbcrateError(
      ErrorCodes.DB_TOOL_MISSING,
      redact(`Cannot run ${pgDump} --version: ${(e as Error).message}`),
      {
        hint: 'Check that the file is an executable pg_dump for this machine.',
        cause: e,
      },
    );
  }
  const v = parseToolVersion(out);
  if (!v) {
    throw new DbcrateError(
      ErrorCodes.DB_TOOL_MISSING,
      `${pgDump} --version gave an unexpected answer: ${out.trim().slice(0, 200)}`,
      {
        hint: 'Point dbcrate at a directory holding the PostgreSQL client tools (pg_dump, pg_restore, psql, pg_basebackup).',
      },
    );
  }
  return v;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

async function inspectDir(binDir: string, serverMajor: number): Promise<ClientTools> {
  const paths = Object.fromEntries(
    Object.entries(TOOLS).map(([k, bin]) => [k, path.join(binDir, bin)]),
  ) as Record<keyof typeof TOOLS, string>;
  const missing = Object.entries(paths)
    .filter(([, p]) => !isExecutable(p))
    .map(([k]) => TOOLS[k as keyof typeof TOOLS]);
  if (missing.length > 0) {
    throw new DbcrateError(
      ErrorCodes.DB_TOOL_MISSING,
      `${binDir} does not hold the PostgreSQL client tools (missing: ${missing.join(', ')})`,
      {
        hint: `Point dbcrate at the bin directory of a PostgreSQL ${serverMajor} (or newer) client installation. ${installHint(serverMajor)}`,
      },
    );
  }
  const version = await toolVersion(paths.pgDump);
  const major = majorOfVersion(version);
  return { binDir, ...paths, version, major, exactMatch: major === serverMajor };
}

function olderError(tools: ClientTools, serverMajor: number): DbcrateError {
  return new DbcrateError(
    ErrorCodes.DB_TOOL_MISSING,
    `pg_dump in ${tools.binDir} is version ${tools.version}, older than the server (PostgreSQL ${serverMajor}): ` +
      `client tools older than the server cannot back it up or restore into it`,
    { hint: `Use PostgreSQL ${serverMajor} client tools (or newer). ${installHint(serverMajor)}` },
  );
}

function newerNote(tools: ClientTools, serverMajor: number): string {
  return (
    `PostgreSQL ${serverMajor} client tools are not installed; using ${tools.major} (${tools.binDir}), which can dump ` +
    `older servers. A restore of its output into a PostgreSQL ${serverMajor} server may meet statements ` +
    `that server does not know. ${installHint(serverMajor)}`
  );
}

/**
 * Choose pg_dump & co for a server: the configured directory, else
 * `<searchRoot>/<major>/bin` for the server's major, else the newest newer major installed.
 * An older major is never returned.
 */
export async function findClientTools(
  serverMajor: number,
  opts: FindClientToolsOptions = {},
): Promise<ClientTools> {
  if (opts.binDir) {
    const dir = path.resolve(opts.binDir);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
      throw new DbcrateError(
        ErrorCodes.DB_TOOL_MISSING,
        `The configured PostgreSQL client directory ${dir} does not exist`,
        {
          hint: `Set it to the bin directory of a PostgreSQL ${serverMajor} client installation (on Debian ${DEBIAN_PG_LIB}/${serverMajor}/bin), or leave it unset to search ${DEBIAN_PG_LIB}.`,
        },
      );
    }
    const tools = await inspectDir(dir, serverMajor);
    if (tools.major < serverMajor) throw olderError(tools, serverMajor);
    return tools.exactMatch ? tools : { ...tools, note: newerNote(tools, serverMajor) };
  }

  const root = opts.searchRoot ?? DEBIAN_PG_LIB;
  const installed = listInstalledMajors(root);
  if (installed.includes(serverMajor)) {
    const tools = await inspectDir(path.join(root, String(serverMajor), 'bin'), serverMajor);
    if (tools.major === serverMajor) return tools;
    // A directory whose pg_dump disagrees with its name is broken; fall through to the others.
  }
  for (const major of installed.filter((m) => m > serverMajor).sort((a, b) => b - a)) {
    const tools = await inspectDir(path.join(root, String(major), 'bin'), serverMajor).catch(() => undefined);
    if (tools && tools.major > serverMajor) return { ...tools, note: newerNote(tools, serverMajor) };
  }
  const found = installed.length > 0 ? `installed: ${installed.join(', ')}` : 'none installed';
  throw new DbcrateError(
    ErrorCodes.DB_TOOL_MISSING,
    `No PostgreSQL ${serverMajor} client tools (pg_dump, pg_restore, psql) found: looked for ` +
      `${path.join(root, String(serverMajor), 'bin', 'pg_dump')} or a newer major (${found}); ` +
      `older ones cannot back up a PostgreSQL ${serverMajor} server`,
    { hint: installHint(serverMajor) },
  );
}

/** Majors with a pg_dump under `<root>/<major>/bin`. */
export function listInstalledMajors(root = DEBIAN_PG_LIB): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return [];
  }
  return names
    .filter((n) => /^\d+(\.\d+)?$/.test(n) && isExecutable(path.join(root, n, 'bin', 'pg_dump')))
    .map(Number)
    .sort((a, b) => a - b);
}
