import { Command } from 'commander';
import { loadConfigFile, type ConfigFile } from '@dbcrate/config';
import { createLogger, setLogger } from '@dbcrate/core';
import { createProgress, type ProgressSink } from '@dbcrate/pipeline';

/** What every command gets: the merged config file, a progress factory, a cancel signal. */
export interface CliContext {
  file: ConfigFile;
  progress: (phase: string, total?: number) => ProgressSink;
  signal: AbortSignal;
}

const controller = new AbortController();
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) process.exit(130); // second ^C: leave now
    interrupted = true;
    process.stderr.write(`\ndbcrate: ${sig} received, stopping and cleaning up (again to force)\n`);
    controller.abort(new Error(`${sig} received`));
  });
}

export function contextFor(cmd: Command): CliContext {
  const g = cmd.optsWithGlobals<{ config?: string; logLevel?: string; progress?: string }>();
  const file = loadConfigFile(g.config ?? process.env.DBCRATE_CONFIG);
  setLogger(
    createLogger({
      level: g.logLevel ?? process.env.DBCRATE_LOG_LEVEL ?? (file['log-level'] as string) ?? 'warn',
    }),
  );
  const mode = (g.progress ?? process.env.DBCRATE_PROGRESS ?? 'auto') as 'auto' | 'tty' | 'json' | 'off';
  return {
    file,
    signal: controller.signal,
    progress: (phase, total) => createProgress({ phase, total, mode: mode === 'auto' ? undefined : mode }),
  };
}
