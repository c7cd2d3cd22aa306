import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import type { PrettyOptions } from 'pino-pretty';
import { redact } from './redact';
import { scopeLogger, setProcessLogger } from './scope';

export type { Logger };

/**
 * The one logger. Output is JSON lines on stderr (stdout is for command results), or with
 * `pretty` one human-readable line per record (for a terminal); every string passed through
 * `redact`, and well-known secret fields removed.
 */
export function createLogger(
  opts: { level?: string; name?: string; destination?: NodeJS.WritableStream; pretty?: boolean } = {},
): Logger {
  return pino(
    {
      name: opts.name ?? 'dbcrate',
      level: opts.level ?? process.env.DBCRATE_LOG_LEVEL ?? 'info',
      redact: {
        paths: [
          'password',
          'passphrase',
          'secretAccessKey',
          'privateKey',
          '*.password',
          '*.passphrase',
          '*.secretAccessKey',
          '*.privateKey',
        ],
        censor: '***',
      },
      hooks: {
        logMethod(args, method) {
          const cleaned = args.map((a) =>
            typeof a === 'string' ? redact(a) : a instanceof Error ? redactError(a) : a,
          ) as Parameters<typeof method>;
          method.apply(this, cleaned);
        },
      },
      formatters: {
        log(obj) {
          return JSON.parse(redact(JSON.stringify(obj))) as Record<string, unknown>;
        },
      },
    },
    opts.pretty
      ? prettyStream(opts.destination ?? process.stderr)
      : ((opts.destination as pino.DestinationStream | undefined) ?? pino.destination(2)),
  );
}

/**
 * "14:04:38 WARN: message key=value" lines. Each starts by clearing the terminal line, so a
 * record written while a progress line is shown replaces it instead of being glued to it
 * (the progress line is redrawn at its next update).
 */
const HIDDEN = new Set(['level', 'time', 'pid', 'hostname', 'name']);

function prettyStream(out: NodeJS.WritableStream): pino.DestinationStream {
  const clearing = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out.write(Buffer.concat([Buffer.from('\r\x1b[K'), chunk]));
      cb();
    },
  });
  // Loaded only for a terminal logger, so that other commands start faster.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- synchronous lazy load
  const pretty = require('pino-pretty') as (o: PrettyOptions) => pino.DestinationStream;
  return pretty({
    destination: clearing,
    sync: true,
    colorize: (out as NodeJS.WriteStream).isTTY === true && !process.env.NO_COLOR,
    translateTime: 'SYS:HH:MM:ss',
    ignore: 'pid,hostname,name',
    hideObject: true,
    messageFormat: (log, messageKey) => {
      const fields = Object.entries(log)
        .filter(([k]) => !HIDDEN.has(k) && k !== messageKey)
        .map(([k, v]) => `${k}=${typeof v === 'string' && !/[\s"=]/.test(v) ? v : JSON.stringify(v)}`);
      return [String(log[messageKey] ?? ''), ...fields].join(' ');
    },
  });
}

function redactError(e: Error): { err: { message: string; code?: unknown } } {
  return { err: { message: redact(e.message), code: (e as { code?: unknown }).code } };
}

let fallback: Logger | undefined;
/** The logger of the current work scope (see `runInScope`), else the process's. */
export function logger(): Logger {
  const scoped = scopeLogger();
  if (scoped) return scoped;
  fallback ??= createLogger();
  return fallback;
}
/** Set the process scope's logger: the CLI, once it has read its settings. */
export function setLogger(l: Logger): void {
  setProcessLogger(l);
}
