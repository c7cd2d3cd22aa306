/**
 * ^C, SIGTERM and SIGHUP (the terminal went away: ssh dropped) stop the running command and
 * let it clean up; a second one leaves at once. Installed by the CLI's `main` only: a daemon
 * that loads the commands' modules keeps its own signal handling.
 */
let controller: AbortController | undefined;

export function installInterruptHandlers(): void {
  if (controller) return;
  const c = new AbortController();
  controller = c;
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (interrupted) process.exit(130); // second ^C: leave now
      interrupted = true;
      process.stderr.write(`\ndbcrate: ${sig} received, stopping and cleaning up (again to force)\n`);
      c.abort(new Error(`${sig} received`));
    });
  }
}

/** The signal a command stops on (one that never fires when no handlers were installed). */
export function interruptSignal(): AbortSignal {
  return controller?.signal ?? new AbortController().signal;
}
