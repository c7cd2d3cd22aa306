import { PassThrough } from 'node:stream';
import { createProgress, formatBytes, formatDuration } from './progress';

describe('progress', () => {
  it('formats bytes and durations', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatDuration(75)).toBe('1m15s');
    expect(formatDuration(3700)).toBe('1h01m');
  });

  it('writes JSON lines when not on a terminal', () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += d));
    const p = createProgress({
      phase: 'backup',
      total: 100,
      stream: out as unknown as NodeJS.WriteStream,
      mode: 'json',
      intervalMs: 0,
    });
    p.update(50);
    p.done({ snapshotId: 'x' });
    const lines = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines[0]).toMatchObject({ event: 'progress', phase: 'backup', bytes: 50, total: 100 });
    expect(lines.at(-1)).toMatchObject({ event: 'done', snapshotId: 'x' });
  });

  it('draws one rewritten line with rate and ETA on a terminal', () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += d));
    const p = createProgress({
      phase: 'restore',
      total: 2048,
      stream: out as unknown as NodeJS.WriteStream,
      mode: 'tty',
      intervalMs: 0,
    });
    p.update(1024);
    expect(text).toContain('restore: 1.0 KiB / 2.0 KiB (50%)');
    expect(text).toContain('/s');
  });
});
