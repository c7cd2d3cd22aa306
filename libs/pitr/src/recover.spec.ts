import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTargetTime, shellQuote, writeRecoveryConfig } from './recover';
import { readRecoveryLog } from './recover.start';

/** PostgreSQL 15 log lines with the default log_line_prefix ('%m [%p] '). */
function log(...lines: string[]): string {
  return (
    lines
      .map((l, i) => `2026-11-25 14:05:01.${String(100 + i).padStart(3, '0')} UTC [4245] ${l}`)
      .join('\n') + '\n'
  );
}

const START = [
  'LOG:  starting PostgreSQL 15.14 (Debian 15.14-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc (Debian 12.2.0-14) 12.2.0, 64-bit',
  'LOG:  listening on IPv4 address "127.0.0.1", port 54329',
  'LOG:  database system was interrupted; last known up at 2026-11-25 13:59:58 UTC',
  'LOG:  starting point-in-time recovery to WAL location (LSN) "0/3000060"',
  'LOG:  restored log file "000000010000000000000002" from archive',
  'LOG:  redo starts at 0/2000028',
  'LOG:  restored log file "000000010000000000000003" from archive',
  'LOG:  consistent recovery state reached at 0/2000100',
  'LOG:  database system is ready to accept read-only connections',
];

describe('readRecoveryLog', () => {
  it('promote at an LSN target', () => {
    const r = readRecoveryLog(
      log(
        ...START,
        'LOG:  recovery stopping after WAL location (LSN) "0/3000060"',
        'LOG:  redo done at 0/3000060 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.03 s',
        'LOG:  last completed transaction was at log time 2026-11-25 14:00:00.123456+00',
        'LOG:  restored log file "00000002.history" from archive',
        'LOG:  selected new timeline ID: 2',
        'LOG:  archive recovery complete',
        'LOG:  checkpoint starting: end-of-recovery immediate wait',
        'LOG:  checkpoint complete: wrote 3 buffers (0.0%); 0 WAL file(s) added, 0 removed, 2 recycled',
        'LOG:  database system is ready to accept connections',
      ),
    );
    expect(r).toEqual({
      outcome: {
        walFilesRestored: 3,
        lastSegmentRestored: '000000010000000000000003',
        stoppedAt: 'after WAL location (LSN) "0/3000060"',
        lsn: '0/3000060',
        time: '2026-11-25 14:00:00.123456+00',
        timeline: 2,
      },
      promoted: true,
      paused: false,
      shutdown: false,
      failed: undefined,
      exited: false,
    });
  });

  it('"ready to accept read-only connections" (hot standby) is not a promotion', () => {
    const r = readRecoveryLog(log(...START));
    expect(r.promoted).toBe(false);
    expect(r.outcome.walFilesRestored).toBe(2);
    expect(r.failed).toBeUndefined();
  });

  it('"redo done at" gives the LSN where replay ended', () => {
    const r = readRecoveryLog(
      log(
        ...START,
        'LOG:  recovery stopping before commit of transaction 742, time 2026-11-25 14:00:00.5+00',
        'LOG:  redo done at 0/30001A8 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.04 s',
        'LOG:  last completed transaction was at log time 2026-11-25 14:00:00.123456+00',
        'LOG:  selected new timeline ID: 3',
        'LOG:  database system is ready to accept connections',
      ),
    );
    expect(r.outcome.lsn).toBe('0/30001A8');
    expect(r.outcome.stoppedAt).toBe('before commit of transaction 742, time 2026-11-25 14:00:00.5+00');
    // the last transaction actually replayed, not the one recovery stopped before
    expect(r.outcome.time).toBe('2026-11-25 14:00:00.123456+00');
    expect(r.outcome.timeline).toBe(3);
    expect(r.promoted).toBe(true);
  });

  it('pause at the target', () => {
    const r = readRecoveryLog(
      log(
        ...START,
        'LOG:  recovery stopping before commit of transaction 742, time 2026-11-25 14:00:00.123456+00',
        'LOG:  pausing at the end of recovery',
        'HINT:  Execute pg_wal_replay_resume() to promote.',
      ),
    );
    expect(r.paused).toBe(true);
    expect(r.promoted).toBe(false);
    expect(r.shutdown).toBe(false);
    expect(r.exited).toBe(false);
    expect(r.failed).toBeUndefined();
    expect(r.outcome.time).toBe('2026-11-25 14:00:00.123456+00');
    expect(r.outcome.timeline).toBeUndefined();
  });

  it('stop at a restore point and shut down', () => {
    const r = readRecoveryLog(
      log(
        ...START,
        'LOG:  recovery stopping at restore point "before migration", time 2026-11-25 14:00:00.123456+00',
        'LOG:  shutdown at recovery target',
        'LOG:  shutting down',
        'LOG:  database system is shut down',
      ),
    );
    expect(r.shutdown).toBe(true);
    expect(r.exited).toBe(true);
    expect(r.failed).toBeUndefined();
    expect(r.outcome.stoppedAt).toBe(
      'at restore point "before migration", time 2026-11-25 14:00:00.123456+00',
    );
    expect(r.outcome.time).toBe('2026-11-25 14:00:00.123456+00');
  });

  it('recovery that ends before the target is a failure with its FATAL message', () => {
    const r = readRecoveryLog(
      log(
        ...START,
        'LOG:  redo done at 0/5000100 system usage: CPU: user: 0.00 s, system: 0.00 s, elapsed: 0.10 s',
        'FATAL:  recovery ended before configured recovery target was reached',
        'LOG:  startup process (PID 123) exited with exit code 1',
        'LOG:  terminating any other active server processes',
        'LOG:  shutting down due to startup process failure',
        'LOG:  database system is shut down',
      ),
    );
    expect(r.exited).toBe(true);
    expect(r.failed).toBe('recovery ended before configured recovery target was reached');
    expect(r.promoted).toBe(false);
  });

  it('a PANIC of the startup process is a failure', () => {
    const r = readRecoveryLog(
      log(
        'LOG:  invalid checkpoint record',
        'PANIC:  could not locate a valid checkpoint record',
        'LOG:  startup process (PID 4245) was terminated by signal 6: Aborted',
        'LOG:  aborting startup due to startup process failure',
        'LOG:  database system is shut down',
      ),
    );
    expect(r.failed).toBe('could not locate a valid checkpoint record');
  });

  it('"the database system is starting up" alone is not a failure', () => {
    const r = readRecoveryLog(
      log(
        'LOG:  database system was interrupted; last known up at 2026-11-25 13:59:58 UTC',
        'FATAL:  the database system is starting up',
        'FATAL:  the database system is not yet accepting connections',
        'DETAIL:  Consistent recovery state has not been yet reached.',
        'LOG:  restored log file "000000010000000000000002" from archive',
      ),
    );
    expect(r.failed).toBeUndefined();
    expect(r.exited).toBe(false);
    expect(r.outcome.walFilesRestored).toBe(1);
  });

  it('a client FATAL does not hide the real cause, nor stand in for it', () => {
    const real = readRecoveryLog(
      log(
        'FATAL:  could not restore file "000000010000000000000004" from archive: child process was terminated by signal 9: Killed',
        'FATAL:  the database system is starting up',
        'LOG:  startup process (PID 123) exited with exit code 1',
      ),
    );
    expect(real.failed).toBe(
      'could not restore file "000000010000000000000004" from archive: child process was terminated by signal 9: Killed',
    );
    const none = readRecoveryLog(
      log(
        'FATAL:  the database system is starting up',
        'LOG:  startup process (PID 123) exited with exit code 1',
      ),
    );
    expect(none.failed).toBe('the server stopped during recovery');
  });

  it('an empty log says nothing yet', () => {
    expect(readRecoveryLog('')).toEqual({
      outcome: { walFilesRestored: 0 },
      promoted: false,
      paused: false,
      shutdown: false,
      failed: undefined,
      exited: false,
    });
  });
});

describe('shellQuote (shape; the sh round trip is in recover.int-spec.ts)', () => {
  it.each([
    'wal-fetch',
    '/usr/bin/node',
    'file:///backups/db',
    '--database-id',
    'a=b',
    'user@host',
    '%f',
    'x+y.z_1',
  ])('leaves the plain word %j untouched', (w) => {
    expect(shellQuote(w)).toBe(w);
  });

  it.each([
    ['with space', "'with space'"],
    ["it's", `'it'\\''s'`],
    ['a&b', "'a&b'"],
    ['$HOME', "'$HOME'"],
    ['', "''"],
  ])('quotes %j', (w, quoted) => {
    expect(shellQuote(w)).toBe(quoted);
  });
});

describe('parseTargetTime', () => {
  it('accepts ISO 8601 with a zone', () => {
    expect(parseTargetTime('2026-11-25T14:03:12.250Z').toISOString()).toBe('2026-11-25T14:03:12.250Z');
    expect(parseTargetTime('2026-11-25T15:03:12.250+01:00').toISOString()).toBe('2026-11-25T14:03:12.250Z');
    expect(parseTargetTime('2026-11-25 14:03:12.250123+00:00').toISOString()).toBe(
      '2026-11-25T14:03:12.250Z',
    );
  });

  // What PostgreSQL prints (now(), "last completed transaction was at log time …") and what
  // the hint of this very function suggests: an hour-only offset after a space.
  it.each([
    ['2026-11-25 14:03:12.250123+00', '2026-11-25T14:03:12.250Z'],
    ['2026-11-25 15:03:12+01', '2026-11-25T14:03:12.000Z'],
  ])('accepts PostgreSQL timestamptz output %j', (text, iso) => {
    expect(parseTargetTime(text).toISOString()).toBe(iso);
  });

  it.each([
    '2026-11-25T14:03:12.250',
    '2026-11-25 14:03:12',
    '2026-11-25T14:03',
    '2026-11-25',
    '2026-11-25 14:03:12 Europe/Paris',
  ])('refuses the zone-less (or named-zone) time %j, naming the missing zone', (text) => {
    let err: unknown;
    try {
      parseTargetTime(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DbcrateError);
    expect((err as DbcrateError).code).toBe(ErrorCodes.USAGE);
    expect((err as DbcrateError).message + String((err as DbcrateError).hint)).toMatch(/time zone/);
  });

  it('accepts a compact offset and a space before the zone', () => {
    expect(parseTargetTime('2026-11-25T15:03:12+0100').toISOString()).toBe('2026-11-25T14:03:12.000Z');
    expect(parseTargetTime('2026-11-25 14:03:12.5 +00').toISOString()).toBe('2026-11-25T14:03:12.500Z');
  });

  it.each(['yesterday', '', '2026-13-45T99:00:00Z'])('refuses %j with E_USAGE', (text) => {
    let err: unknown;
    try {
      parseTargetTime(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DbcrateError);
    expect((err as DbcrateError).code).toBe(ErrorCodes.USAGE);
  });
});

describe('writeRecoveryConfig', () => {
  it('refuses to write through a symlink in the data directory (recover may run as root)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dbcrate-rcfg-'));
    try {
      writeFileSync(join(dir, 'victim'), 'precious\n');
      symlinkSync('victim', join(dir, 'recovery.signal'));
      const e = await writeRecoveryConfig(join(dir), {
        restoreCommand: 'true',
        target: { kind: 'latest' },
        timeline: 'latest',
        inclusive: true,
        action: 'promote',
      }).catch((err: unknown) => err as DbcrateError);
      expect((e as DbcrateError).code).toBe(ErrorCodes.INTEGRITY);
      expect(readFileSync(join(dir, 'victim'), 'utf8')).toBe('precious\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
