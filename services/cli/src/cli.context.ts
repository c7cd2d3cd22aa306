import { Command } from 'commander';
import { checkConfigKeys, loadConfigFile, type ConfigFile } from '@dbcrate/config';
import { createLogger, setLogger } from '@dbcrate/core';
import { createProgress, type ProgressSink } from '@dbcrate/plumbing';
import { interruptSignal } from './cli.signals';

/** What every command gets: the merged config file, a progress factory, a cancel signal. */
export interface CliContext {
  file: ConfigFile;
  progress: (phase: string, total?: number) => ProgressSink;
  signal: AbortSignal;
}

export function contextFor(cmd: Command): CliContext {
  const g = cmd.optsWithGlobals<{ config?: string; logLevel?: string; progress?: string }>();
  const path = g.config ?? process.env.DBCRATE_CONFIG;
  const file = loadConfigFile(path);
  checkConfigKeys(file, knownSettings(cmd), path);
  const mode = (g.progress ?? process.env.DBCRATE_PROGRESS ?? 'auto') as 'auto' | 'tty' | 'json' | 'off';
  // A person at a terminal reads lines; a program reading stderr gets JSON lines.
  const format =
    process.env.DBCRATE_LOG_FORMAT ?? (process.stderr.isTTY && mode !== 'json' ? 'pretty' : 'json');
  setLogger(
    createLogger({
      level: g.logLevel ?? process.env.DBCRATE_LOG_LEVEL ?? (file['log-level'] as string) ?? 'warn',
      pretty: format === 'pretty',
    }),
  );
  return {
    file,
    signal: interruptSignal(),
    progress: (phase, total) => createProgress({ phase, total, mode: mode === 'auto' ? undefined : mode }),
  };
}

/** Every setting any command takes (kebab-case), for refusing unknown keys in a config file. */
function knownSettings(cmd: Command): Set<string> {
  let root = cmd;
  while (root.parent) root = root.parent;
  const known = new Set<string>();
  const visit = (c: Command) => {
    for (const o of c.options) {
      if (o.long) known.add(o.long.replace(/^--/, ''));
      known.add(
        o
          .attributeName()
          .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
          .toLowerCase(),
      );
    }
    c.commands.forEach(visit);
  };
  visit(root);
  known.delete('config');
  known.delete('help');
  known.delete('version');
  return known;
}
