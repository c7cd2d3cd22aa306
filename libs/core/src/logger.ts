import pino, { type Logger } from 'pino';
import { redact } from './redact';

export type { Logger };

/**
 * The one logger. Output is JSON lines on stderr (stdout is for command results), every
 * string passed through `redact`, and well-known secret fields removed.
 */
export function createLogger(
  opts: { level?: string; name?: string; destination?: NodeJS.WritableStream } = {},
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
    (opts.destination as pino.DestinationStream | undefined) ?? pino.destination(2),
  );
}

function redactError(e: Error): { err: { message: string; code?: unknown } } {
  return { err: { message: redact(e.message), code: (e as { code?: unknown }).code } };
}

let root: Logger | undefined;
export function logger(): Logger {
  root ??= createLogger();
  return root;
}
export function setLogger(l: Logger): void {
  root = l;
}
