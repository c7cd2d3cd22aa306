/**
 * Progress for long work: a single rewritten line on a terminal (bytes, rate, elapsed,
 * ETA when the total is known), JSON lines when stderr is not a TTY.
 */
export interface ProgressSink {
  update(bytes: number): void;
  done(extra?: Record<string, unknown>): void;
}

export interface ProgressOptions {
  phase: string;
  total?: number;
  stream?: NodeJS.WriteStream;
  /** Minimum interval between reports. */
  intervalMs?: number;
  /** Force JSON lines / TTY mode (tests). */
  mode?: 'tty' | 'json' | 'off';
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0
    ? `${h}h${String(m).padStart(2, '0')}m`
    : m > 0
      ? `${m}m${String(r).padStart(2, '0')}s`
      : `${r}s`;
}

export function createProgress(opts: ProgressOptions): ProgressSink {
  const stream = opts.stream ?? process.stderr;
  const mode = opts.mode ?? (stream.isTTY ? 'tty' : 'json');
  const interval = opts.intervalMs ?? (mode === 'tty' ? 200 : 2000);
  const start = Date.now();
  let last = 0;
  let bytes = 0;

  const line = (final: boolean, extra?: Record<string, unknown>) => {
    const elapsed = (Date.now() - start) / 1000;
    const rate = elapsed > 0 ? bytes / elapsed : 0;
    if (mode === 'json') {
      const rec: Record<string, unknown> = {
        event: final ? 'done' : 'progress',
        phase: opts.phase,
        bytes,
        elapsedSeconds: Number(elapsed.toFixed(3)),
        bytesPerSecond: Math.round(rate),
      };
      if (opts.total !== undefined) {
        rec.total = opts.total;
        if (!final && rate > 0) rec.etaSeconds = Math.round((opts.total - bytes) / rate);
      }
      stream.write(JSON.stringify({ ...rec, ...extra }) + '\n');
    } else if (mode === 'tty') {
      let s = `${opts.phase}: ${formatBytes(bytes)}`;
      if (opts.total)
        s += ` / ${formatBytes(opts.total)} (${Math.min(100, (100 * bytes) / opts.total).toFixed(0)}%)`;
      s += `  ${formatBytes(rate)}/s  ${formatDuration(elapsed)}`;
      if (!final && opts.total && rate > 0) s += `  ETA ${formatDuration((opts.total - bytes) / rate)}`;
      stream.write(`\r\x1b[K${s}${final ? '\n' : ''}`);
    }
  };

  return {
    update(n: number) {
      bytes = n;
      const now = Date.now();
      if (now - last >= interval) {
        last = now;
        line(false);
      }
    },
    done(extra) {
      line(true, extra);
    },
  };
}
