import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { z } from 'zod';
import { booleanSetting, intSetting, resolveSettings } from '@dbcrate/config';
import { DbcrateError, ErrorCodes, logger } from '@dbcrate/core';
import {
  agentSocketPath,
  fetchFromWalServer,
  prefetchWalFiles,
  pushExpect,
  readSystemIdentifier,
  requestPush,
  requireWalFileName,
  restoreWalFile,
  sealWal,
  validateDatabaseId,
  WalAgent,
  WalArchiver,
  writeAtomically,
} from '@dbcrate/pitr';
import type { KeyProvider } from '@dbcrate/crypto';
import { openStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';
import { reportError } from '../cli.errors';
import { keysFrom } from '../key-files';
import { signingFlags, signingSettings, trustFlags, trustSettings } from '../signing.options';
import { agentFailure, settingsVerifier } from './wal.expect';

const collect = (v: string, prev: string[] = []) => [...prev, v];

const pushSchema = z.object({
  to: z.string().optional(),
  recipient: z.array(z.string()).optional(),
  pgdata: z.string().optional(),
  databaseId: z.string().optional(),
  socket: z.string().optional(),
  agent: booleanSetting.default(true),
  compressionLevel: intSetting(1, 19).default(3),
  zstd: z.enum(['auto', 'native', 'wasm']).default('auto'),
  parallel: intSetting(1, 64).default(2),
  ...signingSettings,
});

function required<T>(v: T | undefined, setting: string, what: string): T {
  if (v === undefined || (Array.isArray(v) && v.length === 0)) {
    throw new DbcrateError(ErrorCodes.CONFIG, `missing setting ${setting}: ${what}`, {
      hint: `pass --${setting}, set DBCRATE_${setting.toUpperCase().replace(/-/g, '_')}, or put ${setting}: in the --config file`,
    });
  }
  return v;
}

function storageAndSealFlags(cmd: Command): Command {
  return signingFlags(cmd)
    .option('--to <DEST_URL>', 'destination URL (file://, s3://, sftp://)')
    .option(
      '--recipient <PUBKEY_FILE>',
      'organisation public key to encrypt to (repeat for several)',
      collect,
    )
    .option('--database-id <ID>', 'name of this cluster in the destination (default: its system identifier)')
    .option('--socket <PATH>', 'agent socket (default: derived from the data directory)')
    .option('--compression-level <N>', 'zstd level 1-19 (default 3)')
    .option('--zstd <IMPL>', 'zstd implementation: auto | native | wasm (default auto)');
}

async function archiverFor(s: z.infer<typeof pushSchema>, pgdata: string) {
  const to = required(s.to, 'to', 'the destination URL WAL is archived to');
  required(s.recipient, 'recipient', 'the public key WAL is encrypted to');
  const keys = keysFrom(s);
  const recipients = await keys.recipients();
  const signingKey = await keys.signingKey();
  const systemIdentifier = await readSystemIdentifier(pgdata);
  const databaseId = s.databaseId ? validateDatabaseId(s.databaseId) : systemIdentifier;
  const storage = await openStorage(to);
  const seal = { recipients, level: s.compressionLevel, implementation: s.zstd, signingKey, databaseId };
  return { storage, databaseId, systemIdentifier, seal };
}

export function walPushCommand(): Command {
  return storageAndSealFlags(
    new Command('wal-push')
      .description("archive one WAL file (use as archive_command = 'dbcrate wal-push %p --config FILE')")
      .argument('<PATH>', 'the WAL file, relative to the data directory (%p)')
      .option('--pgdata <DIR>', 'data directory (default: the current directory, where archive_command runs)')
      .option('--no-agent', 'do not hand the file to a running `dbcrate agent`; push it from this process'),
  ).action(async (path: string, _o, cmd: Command) => {
    const ctx = contextFor(cmd);
    const s = resolveSettings(pushSchema, { flags: cmd.opts(), file: ctx.file });
    const pgdata = resolve(s.pgdata ?? process.cwd());
    // %p is relative to the data directory (where archive_command runs), also with --pgdata
    const abs = resolve(pgdata, path);
    requireWalFileName(abs.split('/').pop() ?? '');
    if (s.agent) {
      const g = cmd.optsWithGlobals<{ config?: string }>();
      const flags = cmd.opts<{
        to?: string;
        recipient?: string[];
        databaseId?: string;
        signingKey?: string;
      }>();
      const expect = pushExpect({ ...flags, config: g.config });
      const reply = await requestPush(s.socket ?? agentSocketPath(pgdata), abs, { expect }).catch(
        (e: unknown) => {
          throw agentFailure(e);
        },
      );
      if (reply?.ok) return;
      if (reply && !reply.ok)
        throw new DbcrateError(reply.code as never, reply.message, { hint: reply.hint });
      logger().debug('no agent listening; pushing from this process');
    }
    const a = await archiverFor(s, pgdata);
    try {
      const archiver = new WalArchiver({ ...a, seal: (plain, walFile) => sealWal(plain, a.seal, walFile) });
      const r = await archiver.push(abs, ctx.signal);
      logger().info({ walFile: r.walFile, outcome: r.outcome }, 'wal-push done');
    } finally {
      await a.storage.close();
    }
  });
}

/**
 * DBCRATE_TEST_HANG_IN_PUT=<file> (tests only): the agent's first WAL upload stops right
 * before its commit step, with its bytes written, after writing the WAL file's name to
 * <file>; so a test can kill the agent inside a put, deterministically.
 */
function hangInPutForTests(): { beforeCommit: (walFile: string) => Promise<void> } | undefined {
  const marker = process.env.DBCRATE_TEST_HANG_IN_PUT;
  if (!marker) return undefined;
  let hung = false;
  return {
    beforeCommit: async (walFile) => {
      if (hung) return;
      hung = true;
      writeFileSync(marker, walFile + '\n');
      await new Promise<never>(() => undefined);
    },
  };
}

/**
 * archive_command runs as the cluster's owner and only trusts an agent of that user (its
 * socket and secret are private to it): an agent of another user would never be used, and
 * archive_command would fail or fall back. Say so at once instead.
 */
async function requireClusterOwner(pgdata: string): Promise<void> {
  const st = await stat(pgdata).catch((e: NodeJS.ErrnoException) => {
    throw new DbcrateError(ErrorCodes.CONFIG, `cannot read the data directory ${pgdata}: ${e.code}`, {
      hint: 'give the data directory of the cluster whose WAL to archive (--pgdata)',
    });
  });
  const uid = process.getuid?.();
  if (uid === undefined || st.uid === uid) return;
  const owner = userName(st.uid);
  throw new DbcrateError(
    ErrorCodes.CONFIG,
    `the agent runs as ${userName(uid)} (uid ${uid}), but ${pgdata} belongs to ${owner} (uid ${st.uid}), who runs archive_command`,
    { hint: `start it as the cluster's owner: runuser -u ${owner} -- dbcrate agent --pgdata ${pgdata} …` },
  );
}

function userName(uid: number): string {
  try {
    const line = readFileSync('/etc/passwd', 'utf8')
      .split('\n')
      .find((l) => l.split(':')[2] === String(uid));
    return line?.split(':')[0] ?? String(uid);
  } catch {
    return String(uid);
  }
}

export function agentCommand(): Command {
  return storageAndSealFlags(
    new Command('agent')
      .description('resident WAL agent: pushes ready WAL ahead so each archive_command call returns at once')
      .option('--pgdata <DIR>', 'data directory of the cluster whose WAL to archive')
      .option(
        '--parallel <N>',
        'WAL files pushed at once, each compressed and encrypted on its own thread (default 2)',
      ),
  ).action(async (_o, cmd: Command) => {
    const ctx = contextFor(cmd);
    const s = resolveSettings(pushSchema, { flags: cmd.opts(), file: ctx.file });
    const pgdata = resolve(required(s.pgdata, 'pgdata', 'the data directory of the cluster'));
    await requireClusterOwner(pgdata);
    const a = await archiverFor(s, pgdata);
    const agent = new WalAgent({
      ...a,
      pgdata,
      socketPath: s.socket ?? agentSocketPath(pgdata),
      parallel: s.parallel,
      hooks: hangInPutForTests(),
      verifyExpect: settingsVerifier({
        displayUrl: a.storage.displayUrl,
        databaseId: a.databaseId,
        systemIdentifier: a.systemIdentifier,
        recipients: a.seal.recipients,
        signer: a.seal.signingKey.fingerprint,
      }),
    });
    await agent.start();
    process.stderr.write(
      `dbcrate agent: archiving WAL of ${pgdata} to ${a.storage.displayUrl} (database id ${a.databaseId})\n`,
    );
    // A signal may have come while it started (its worker threads load first).
    if (!ctx.signal.aborted)
      await new Promise<void>((r) => ctx.signal.addEventListener('abort', () => r(), { once: true }));
    await agent.stop();
    await a.storage.close();
  });
}

const fetchSchema = z.object({
  from: z.string().min(1, 'the destination URL WAL was archived to'),
  key: z.string().min(1, 'the private key file (e.g. ORG.key.asc)'),
  passphraseEnv: z.string().optional(),
  databaseId: z.string().optional(),
  pgdata: z.string().optional(),
  prefetch: intSetting(0, 256).default(8),
  prefetchParallel: intSetting(1, 32).default(2),
  prefetchOnly: booleanSetting.default(false),
  ...trustSettings,
  walSegmentSize: intSetting(1 << 20, 1 << 30).optional(),
});

/**
 * restore_command's exit status decides what PostgreSQL does next: 1 means "not in the
 * archive" (end of WAL, or try the next timeline). Any other failure must not look like
 * that, or recovery would end early and silently lose the rest of the WAL; an exit
 * status above 125 makes PostgreSQL stop recovery instead. So: 128 + our exit code.
 */
function fetchExitCode(e: unknown): number {
  const code = (e as { code?: string }).code;
  if (code === ErrorCodes.WAL_NOT_FOUND) {
    process.stderr.write(`dbcrate: ${(e as Error).message}\n`);
    return 1;
  }
  return 128 + reportError(e);
}

export function walFetchCommand(): Command {
  return trustFlags(new Command('wal-fetch'))
    .description(
      "restore one WAL file (restore_command = 'dbcrate wal-fetch %f %p …'; `dbcrate recover` writes it)",
    )
    .argument('<WALFILE>', 'WAL file name (%f)')
    .argument('<PATH>', 'where to write it, relative to the data directory (%p)')
    .option('--from <DEST_URL>', 'destination URL WAL was archived to')
    .option('--key <PRIVKEY_FILE>', 'organisation private key')
    .option('--passphrase-env <VAR>', 'environment variable holding the private key passphrase')
    .option('--database-id <ID>', 'database id in the destination')
    .option(
      '--from-socket <DIR>',
      'ask the `dbcrate recover --start` process serving WAL in DIR (no key needed; recover writes this)',
    )
    .option('--pgdata <DIR>', 'data directory being recovered (default: the current directory)')
    .option('--prefetch <N>', 'following segments to fetch ahead in the background (default 8, 0 = off)')
    .option('--prefetch-parallel <N>', 'parallel downloads of the prefetcher (default 2)')
    .addOption(new Option('--prefetch-only').hideHelp())
    .addOption(new Option('--wal-segment-size <BYTES>').hideHelp())
    .exitOverride()
    .action(async (walFile: string, path: string, _o, cmd: Command) => {
      try {
        await walFetch(walFile, path, cmd);
        process.exitCode = 0;
      } catch (e) {
        process.exitCode = fetchExitCode(e);
      }
    });
}

async function walFetch(walFile: string, path: string, cmd: Command): Promise<void> {
  const fromSocket = cmd.opts<{ fromSocket?: string }>().fromSocket;
  if (fromSocket) {
    requireWalFileName(walFile);
    await writeAtomically(resolve(process.cwd(), path), await fetchFromWalServer(fromSocket, walFile));
    return;
  }
  const ctx = contextFor(cmd);
  const s = resolveSettings(fetchSchema, { flags: cmd.opts(), file: ctx.file });
  requireWalFileName(walFile);
  const pgdata = resolve(s.pgdata ?? process.cwd());
  const keys = keysFrom(s);
  const common = {
    walFile,
    pgdata,
    openStorage: () => openStorage(s.from),
    databaseId: s.databaseId,
    keys,
    prefetch: s.prefetch,
    walSegmentSize: s.walSegmentSize,
  };
  if (s.prefetchOnly) {
    await prefetchWalFiles({ ...common, parallel: s.prefetchParallel });
    return;
  }
  await restoreWalFile({
    ...common,
    dest: resolve(process.cwd(), path),
    startPrefetch: (segSize) =>
      startPrefetcher(walFile, path, pgdata, { ...s, walSegmentSize: segSize }, keys),
  });
}

/** A detached copy of this command fetches the following segments while PostgreSQL replays. */
function startPrefetcher(
  walFile: string,
  path: string,
  pgdata: string,
  s: z.infer<typeof fetchSchema>,
  keys: KeyProvider,
): void {
  const args = [process.argv[1], 'wal-fetch', walFile, path, '--from', s.from, ...(keys.readerArgs() ?? [])];
  if (s.databaseId) args.push('--database-id', s.databaseId);
  args.push('--pgdata', pgdata, '--prefetch', String(s.prefetch));
  args.push('--prefetch-parallel', String(s.prefetchParallel), '--prefetch-only');
  if (s.walSegmentSize) args.push('--wal-segment-size', String(s.walSegmentSize));
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: 'ignore',
    cwd: process.cwd(),
    env: process.env,
  });
  child.unref();
}
