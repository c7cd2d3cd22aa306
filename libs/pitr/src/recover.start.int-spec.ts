import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { startRecovery } from './recover.start';

/**
 * startRecovery against a stand-in pg_ctl (binDir is a parameter): it records its options
 * and environment, leaves a live "postmaster" (sleep) and writes the log lines of a
 * scenario (named in a file: the server inherits only an allowlisted environment).
 * Deterministic: no real server, no timing race.
 */
const FAKE_PG_CTL = `#!/bin/bash
while [ $# -gt 0 ]; do case "$1" in -D) D=$2; shift;; -l) L=$2; shift;; -o) O=$2; shift;; esac; shift; done
FAKE_MODE=$(cat "$D/../fake.mode")
echo "$O" > "$D/fake.opts"
env > "$D/fake.env"
if [ "$FAKE_MODE" != dies ]; then sleep 120 >/dev/null 2>&1 & P=$!; else true & P=$!; wait $P; fi
echo $P > "$D/postmaster.pid"
[ "$FAKE_MODE" != dies ] && echo "$P" > "$D/fake.pid"
T="2026-11-25 14:05:01.100 UTC [42]"
echo "$T LOG:  starting point-in-time recovery to earliest consistent point" >> "$L"
case "$FAKE_MODE" in
  stall) echo "$T FATAL:  could not open file \\"pg_wal/000000010000000000000003\\": Permission denied" >> "$L";;
  promote) printf '%s\\n' "$T LOG:  restored log file \\"000000010000000000000002\\" from archive" "$T LOG:  redo done at 0/2000100" "$T LOG:  database system is ready to accept connections" >> "$L";;
  dies) echo "$T FATAL:  invalid value for parameter" >> "$L";;
  clientfatal) echo "2026-11-25 14:05:02.100 UTC [77] FATAL:  password authentication failed for user \\"monitor\\"" >> "$L";;
esac
exit 0
`;

describe('startRecovery', () => {
  let root: string;
  let binDir: string;
  let dir: string;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'dbcrate-start-'));
    binDir = join(root, 'bin');
    dir = join(root, 'data');
    mkdirSync(binDir);
    mkdirSync(dir);
    writeFileSync(join(binDir, 'pg_ctl'), FAKE_PG_CTL);
    chmodSync(join(binDir, 'pg_ctl'), 0o755);
  });

  afterEach(() => {
    const pidFile = join(dir, 'fake.pid');
    if (existsSync(pidFile)) {
      const pid = Number(readFileSync(pidFile, 'utf8'));
      if (pid > 1) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    rmSync(root, { recursive: true, force: true });
    delete process.env.AWS_SECRET_ACCESS_KEY;
    delete process.env.DBCRATE_TEST_PASSPHRASE;
  });

  const run = (mode: string, extra: Partial<Parameters<typeof startRecovery>[0]> = {}) => {
    writeFileSync(join(root, 'fake.mode'), mode);
    return startRecovery({ dir, binDir, port: 54999, action: 'promote', timeoutMs: 60_000, ...extra });
  };

  it('asks for lc_messages=C and keeps the named variables out of the server environment', async () => {
    process.env.DBCRATE_TEST_PASSPHRASE = 'sekrit-passphrase';
    process.env.AWS_SECRET_ACCESS_KEY = 'sekrit-storage-key';
    const out = await run('promote', { dropEnv: ['DBCRATE_TEST_PASSPHRASE'] });
    expect(out.state).toBe('promoted');
    expect(out.walFilesRestored).toBe(1);
    expect(readFileSync(join(dir, 'fake.opts'), 'utf8')).toMatch(/-c lc_messages=C\b/);
    const env = readFileSync(join(dir, 'fake.env'), 'utf8');
    expect(env).toMatch(/^PATH=/m);
    expect(env).not.toContain('sekrit-passphrase');
    expect(env).not.toContain('sekrit-storage-key');
  });

  it('a FATAL and then no progress fails at once with the log tail, not at the deadline', async () => {
    const t0 = Date.now();
    let err: unknown;
    try {
      await run('stall', { stallMs: 1000 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DbcrateError);
    expect((err as DbcrateError).code).toBe(ErrorCodes.RECOVERY_FAILED);
    expect((err as DbcrateError).message).toMatch(/no progress for 1 s after: could not open file/);
    expect((err as DbcrateError).hint).toMatch(/last lines:\n.*starting point-in-time recovery/);
    expect(Date.now() - t0).toBeLessThan(30_000);
  });

  it("a client's FATAL during a slow replay is no stall: recovery is waited for", async () => {
    let err: unknown;
    try {
      await run('clientfatal', { stallMs: 300, timeoutMs: 2500 });
    } catch (e) {
      err = e;
    }
    expect((err as DbcrateError).message).toBe('recovery did not reach its target in time');
  });

  it('a server that is gone fails with its FATAL and the log tail', async () => {
    let err: unknown;
    try {
      await run('dies');
    } catch (e) {
      err = e;
    }
    expect((err as DbcrateError).code).toBe(ErrorCodes.RECOVERY_FAILED);
    expect((err as DbcrateError).message).toMatch(/the server stopped: invalid value for parameter/);
    expect((err as DbcrateError).hint).toContain('FATAL:  invalid value for parameter');
  });
});
