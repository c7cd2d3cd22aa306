import { restoreCommandFor } from './recover.wal';

describe('restoreCommandFor', () => {
  const base = {
    walFetch: ['/usr/bin/node', '/opt/dbcrate/main.js', 'wal-fetch'],
    from: 'file:///x',
    databaseId: '744',
    readerArgs: ['--key', '/k/org.key.asc'],
  };

  it('takes WAL from pg_wal/dbcrate-prefetch by default, and asks the socket for the rest', () => {
    const cmd = restoreCommandFor({ ...base, socketDir: '/tmp/dbcrate-wal-abc' });
    expect(cmd).toMatch(/^f=%f; s=pg_wal\/dbcrate-prefetch; /);
    expect(cmd).toContain('--from-socket /tmp/dbcrate-wal-abc');
    expect(cmd).not.toContain('/k/org.key.asc');
    // a segment marked .keep is copied (asked for again at the end of recovery), others moved
    expect(cmd).toContain('if [ -e "$s/$f.keep" ]; then cp "$s/$f" %p');
    expect(cmd).toContain('mv -f "$s/$f" %p');
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

  it('without a socket, fetches itself with the keys the reader arguments open', () => {
    const cmd = restoreCommandFor(base);
    expect(cmd).toContain(
      'exec /usr/bin/node /opt/dbcrate/main.js wal-fetch %f %p --from file:///x --database-id 744 --key /k/org.key.asc',
    );
  });

  it('refuses to write one that could fetch nothing', () => {
    expect(() => restoreCommandFor({ walFetch: base.walFetch })).toThrow(/socket or the keys/);
  });
});
