import { Command, Option } from 'commander';
import { DBCRATE_VERSION } from '@dbcrate/plumbing';
import { reportError } from './cli.errors';
import { installInterruptHandlers } from './cli.signals';
import { backupCommand } from './commands/backup.command';
import { basebackupCommand } from './commands/basebackup.command';
import { checkCommand } from './commands/check.command';
import { infoCommand } from './commands/info.command';
import { keysCommand } from './commands/keys.command';
import { restoreCommand } from './commands/restore.command';
import { snapshotsCommand } from './commands/snapshots.command';
import { storageCommand } from './commands/storage.command';
import { agentCommand, walFetchCommand, walPushCommand } from './commands/wal.command';
import { recoverCommand } from './commands/recover.command';
import { windowsCommand } from './commands/windows.command';

export function buildProgram(): Command {
  const program = new Command('dbcrate')
    .description('encrypted PostgreSQL backups: pg_dump → zstd → OpenPGP → your storage')
    .version(DBCRATE_VERSION)
    .option('--config <FILE>', 'YAML file with settings (flags > DBCRATE_* environment > file)')
    .option('--log-level <LEVEL>', 'log level on stderr: error | warn | info | debug (default warn)')
    .addOption(new Option('--progress <MODE>', 'progress output').choices(['auto', 'tty', 'json', 'off']))
    .showHelpAfterError('(add --help for usage)')
    .addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 internal error, 2 usage/configuration, 3 database, 4 storage, 5 key/passphrase,\n' +
        '            6 integrity check failed, 7 backup/WAL not found, incomplete or outside the restore window,\n' +
        '            8 target refused, 9 WAL conflict (different content or another cluster),\n' +
        '            10 not signed by a trusted signer (--trust, --allow-unsigned), 11 check: WAL did not arrive,\n' +
        '            130 interrupted\n' +
        '            wal-fetch: 1 = not in the archive, 128 + code on any other error (PostgreSQL then stops recovery)',
    );
  for (const c of [
    keysCommand(),
    backupCommand(),
    snapshotsCommand(),
    restoreCommand(),
    storageCommand(),
    basebackupCommand(),
    walPushCommand(),
    agentCommand(),
    walFetchCommand(),
    recoverCommand(),
    windowsCommand(),
    infoCommand(),
    checkCommand(),
  ]) {
    program.addCommand(c);
  }
  program.exitOverride();
  for (const c of program.commands) {
    for (const sub of [c, ...c.commands]) {
      sub.exitOverride();
      // --config, --log-level and --progress work on every command: show them there too
      sub.configureHelp({ showGlobalOptions: true });
    }
  }
  return program;
}

async function main(): Promise<void> {
  installInterruptHandlers();
  // Node 20 is the platform dbcrate targets; the AWS SDK's notice that its future releases
  // need Node 22 is not something a user can act on, so keep it off their stderr.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  try {
    await buildProgram().parseAsync(process.argv);
    process.exitCode ??= 0;
  } catch (e) {
    process.exitCode = reportError(e);
  }
  // Open handles (sockets kept alive by SDKs) must not keep a finished command running.
  setImmediate(() => process.exit(process.exitCode ?? 0)).unref();
}

void main();
