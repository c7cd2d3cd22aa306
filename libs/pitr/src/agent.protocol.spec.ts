import { mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AgentError,
  agentSocketPath,
  checkSocketDir,
  privateTmpDir,
  pushExpect,
  replyMac,
} from './agent.protocol';

describe('agent socket path', () => {
  it('is in pg_wal for a short data directory', () => {
    expect(agentSocketPath('/var/lib/pg/main')).toBe('/var/lib/pg/main/pg_wal/dbcrate-agent.sock');
  });

  it('falls back to a private per-user directory (not a shared /tmp name) for long paths', () => {
    const long = '/srv/' + 'x'.repeat(120);
    const p = agentSocketPath(long);
    expect(p.startsWith(`${privateTmpDir()}/`)).toBe(true);
    expect(privateTmpDir()).toBe(join(tmpdir(), `dbcrate-agent-${process.geteuid!()}`));
    expect(p).toMatch(/\/[0-9a-f]{16}\.sock$/);
    expect(Buffer.byteLength(p)).toBeLessThan(108);
  });

  it('the private directory is created 0700 and a symlink in its place is refused', () => {
    const base = mkdtempSync(join(tmpdir(), 'dbcrate-proto-'));
    const saved = process.env.TMPDIR;
    try {
      process.env.TMPDIR = base;
      const sock = join(privateTmpDir(), 'a.sock');
      checkSocketDir(sock, { create: true });
      expect(statSync(privateTmpDir()).mode & 0o777).toBe(0o700);
      rmSync(privateTmpDir(), { recursive: true });
      symlinkSync('/tmp', privateTmpDir());
      expect(() => checkSocketDir(sock, { create: true })).toThrow(AgentError);
    } finally {
      process.env.TMPDIR = saved;
      rmSync(base, { recursive: true, force: true });
    }
  });
});

describe('agent protocol', () => {
  it('the reply MAC covers the nonce and the reply line', () => {
    const s = 'ab'.repeat(32);
    expect(replyMac(s, 'n1', '{"ok":true}')).not.toBe(replyMac(s, 'n2', '{"ok":true}'));
    expect(replyMac(s, 'n1', '{"ok":true}')).not.toBe(replyMac(s, 'n1', '{"ok":false}'));
    expect(replyMac(s, 'n1', '{"ok":true}')).toMatch(/^[0-9a-f]{64}$/);
  });

  it('pushExpect carries flags, the config path and the relevant environment only', () => {
    const e = pushExpect(
      { config: 'wal.yaml', to: 'file:///x', recipient: ['k.asc'] },
      { DBCRATE_DATABASE_ID: 'db', DBCRATE_SFTP_PASSWORD: 'secret', DBCRATE_CONFIG: '/ignored' },
      '/etc/dbcrate',
    );
    expect(e).toEqual({
      cwd: '/etc/dbcrate',
      config: '/etc/dbcrate/wal.yaml',
      to: 'file:///x',
      recipient: ['k.asc'],
      env: { DBCRATE_DATABASE_ID: 'db' },
    });
  });
});
