import { restoreCommandFor } from './recover.wal';

describe('restoreCommandFor', () => {
  const base = { from: 'file:///x', keyPath: '/k/org.key.asc', databaseId: '744' };

  it('takes WAL from pg_wal/dbcrate-prefetch by default, and asks the socket for the rest', () => {
    const cmd = restoreCommandFor({ ...base, socketDir: '/tmp/dbcrate-wal-abc' });
    expect(cmd).toMatch(/^f=%f; s=pg_wal\/dbcrate-prefetch; /);
    expect(cmd).toContain('--from-socket /tmp/dbcrate-wal-abc');
    expect(cmd).not.toContain('/k/org.key.asc');
  });

  it('recover as root: the spool is the root-owned one outside the data directory', () => {
    const cmd = restoreCommandFor({
      ...base,
      socketDir: '/tmp/dbcrate-wal-abc',
      spoolDir: '/tmp/dbcrate-spool-Q1%x/spool',
    });
    expect(cmd).toMatch(/^f=%f; s=\/tmp\/dbcrate-spool-Q1%%x\/spool; /);
    expect(cmd).not.toContain('pg_wal/dbcrate-prefetch');
  });
});
