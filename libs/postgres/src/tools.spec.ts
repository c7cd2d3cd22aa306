import { installHint, majorOfVersion, parseToolVersion } from './tools';
import { majorOf } from './server';

describe('tool versions', () => {
  it.each([
    ['pg_dump (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)', '15.14'],
    ['pg_dump (PostgreSQL) 9.6.24', '9.6.24'],
    ['pg_dump (PostgreSQL) 17beta1', '17beta1'],
    ['pg_dump (PostgreSQL) 16.2 (Ubuntu 16.2-1.pgdg22.04+1)', '16.2'],
  ])('parses %s', (out, v) => expect(parseToolVersion(out)).toBe(v));

  it('rejects output that is not pg_dump', () => expect(parseToolVersion('bash 5.2')).toBeUndefined());

  it.each([
    ['15.14', 15],
    ['9.6.24', 9.6],
    ['17beta1', 17],
    ['10.0', 10],
  ])('major of %s is %s', (v, m) => expect(majorOfVersion(v)).toBe(m));

  it.each([
    [150014, 15],
    [100023, 10],
    [90624, 9.6],
    [170000, 17],
  ])('major of server_version_num %s is %s', (n, m) => expect(majorOf(n)).toBe(m));
});

describe('installHint', () => {
  it('names only the package when the release ships that major', () => {
    expect(installHint(15, { id: 'debian', versionId: '12' })).toBe(
      'Install them: apt-get install postgresql-client-15.',
    );
  });

  it('points to the PGDG repository for majors Debian does not ship', () => {
    const h = installHint(17, { id: 'debian', versionId: '12' });
    expect(h).toContain('apt-get install postgresql-client-17');
    expect(h).toContain('not in Debian 12');
    expect(h).toContain('PGDG');
    expect(h).toContain('apt.postgresql.org');
  });

  it('mentions PGDG on unknown systems', () => {
    expect(installHint(16, {})).toContain('PGDG');
  });
});
