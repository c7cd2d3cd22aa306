import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentSocketPath, checkSocketDir, privateTmpDir, pushExpect, replyMac } from './agent.protocol';

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

  it('the private directory is created 0700 and checked', () => {
    checkSocketDir(join(privateTmpDir(), 'x.sock'), { create: true });
    const st = statSync(privateTmpDir());
    expect(st.isDirectory()).toBe(true);
    expect(st.mode & 0o777).toBe(0o700);
  });

  it('a socket directory that is a symlink, or writable by others, is refused', () => {
    const base = mkdtempSync(join(tmpdir(), 'dbcrate-proto-'));
    try {
      mkdirSync(join(base, 'real'), { mode: 0o700 });
      symlinkSync(join(base, 'real'), join(base, 'link'));
      expect(() => checkSocketDir(join(base, 'link', 'a.sock'))).toThrow(/not a directory/);
      chmodSync(join(base, 'real'), 0o777);
      expect(() => checkSocketDir(join(base, 'real', 'a.sock'))).toThrow(/writable by other users/);
      chmodSync(join(base, 'real'), 0o700);
      expect(() => checkSocketDir(join(base, 'real', 'a.sock'))).not.toThrow();
    } finally {
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
