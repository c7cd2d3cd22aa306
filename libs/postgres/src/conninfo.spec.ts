import * as os from 'node:os';
import { DbcrateError, redact } from '@dbcrate/core';
import {
  childEnv,
  describeConnInfo,
  maskConnectionString,
  parseConnectionString,
  toLibpqEnv,
} from './conninfo';

function badUrl(input: string): DbcrateError {
  try {
    parseConnectionString(input);
  } catch (e) {
    return e as DbcrateError;
  }
  throw new Error(`expected ${input} to be rejected`);
}

describe('parseConnectionString', () => {
  it('parses a full URL', () => {
    const c = parseConnectionString('postgres://alice:s3cret@db.example.com:6543/sales?sslmode=require');
    expect(c).toEqual({
      host: 'db.example.com',
      hostaddr: undefined,
      port: 6543,
      user: 'alice',
      password: 's3cret',
      database: 'sales',
      socket: false,
      sslmode: 'require',
      params: {},
    });
  });

  it('accepts postgresql:// and any scheme case, with defaults', () => {
    const c = parseConnectionString('PostgreSQL://bob@localhost/app');
    expect(c).toMatchObject({
      host: 'localhost',
      port: 5432,
      user: 'bob',
      database: 'app',
      sslmode: 'prefer',
    });
    expect(c.password).toBeUndefined();
  });

  it('decodes percent-encoded user, password and database', () => {
    const c = parseConnectionString('postgres://us%40er:p%40ss%3Aw%2Fo%25rd@h/my%20db');
    expect(c).toMatchObject({ user: 'us@er', password: 'p@ss:w/o%rd', database: 'my db' });
  });

  it('takes the last @ as the end of the userinfo (unencoded @ in a password)', () => {
    expect(parseConnectionString('postgres://u:p@ss@h:1/d')).toMatchObject({
      user: 'u',
      password: 'p@ss',
      host: 'h',
      port: 1,
    });
  });

  it('keeps an empty password distinct from none', () => {
    expect(parseConnectionString('postgres://u:@h/d').password).toBe('');
  });

  it('parses IPv6 hosts', () => {
    const c = parseConnectionString('postgres://u:p@[::1]:5433/d');
    expect(c).toMatchObject({ host: '::1', port: 5433, socket: false });
    expect(describeConnInfo(c)).toBe('u@[::1]:5433/d');
  });

  it('understands Unix-socket forms', () => {
    expect(parseConnectionString('postgres:///app?host=/var/run/postgresql')).toMatchObject({
      host: '/var/run/postgresql',
      socket: true,
      database: 'app',
    });
    expect(parseConnectionString('postgresql://postgres@%2Ftmp%2Fsock:5499/x')).toMatchObject({
      host: '/tmp/sock',
      port: 5499,
      socket: true,
      user: 'postgres',
    });
    // No host at all: libpq's default socket directory on Debian.
    expect(parseConnectionString('postgres:///app')).toMatchObject({
      host: '/var/run/postgresql',
      socket: true,
    });
  });

  it('defaults user to the OS user and database to the user', () => {
    const c = parseConnectionString('postgres://h');
    expect(c.user).toBe(os.userInfo().username);
    expect(c.database).toBe(c.user);
  });

  it('lets query parameters override and keeps other libpq parameters', () => {
    const c = parseConnectionString(
      'postgres://u@h:1/d?port=2&dbname=e&application_name=nightly+run&sslrootcert=/etc/ca.pem&password=pw%26x',
    );
    expect(c).toMatchObject({ port: 2, database: 'e', password: 'pw&x' });
    expect(c.params).toEqual({ application_name: 'nightly run', sslrootcert: '/etc/ca.pem' });
  });

  it('parses the key=value form with quoting and escapes', () => {
    const c = parseConnectionString(
      `host=10.0.0.5 port = 5433 dbname='my db' user=ops password='it\\'s a \\\\secret' sslmode=verify-full`,
    );
    expect(c).toMatchObject({
      host: '10.0.0.5',
      port: 5433,
      database: 'my db',
      user: 'ops',
      password: "it's a \\secret",
      sslmode: 'verify-full',
    });
  });

  it.each([
    ['', 'empty'],
    ['mysql://u:p@h/d', 'expected a postgres:// URL'],
    ['postgres://u:p@h:99999/d', 'bad port'],
    ['postgres://u:p@h:abc/d', 'bad port'],
    ['postgres://u:p@h1:5432,h2:5432/d', 'several hosts'],
    ['postgres://u:p@h/d?sslmode=sometimes', 'bad sslmode'],
    ['postgres://u:p@h/d?ssl=true', 'sslmode=require'],
    ['postgres://u:p@h/d?foo=bar', 'unsupported parameter "foo"'],
    ['postgres://u:p%zz@h/d', 'percent-encoding'],
    ['postgres://u:p@[::1/d', 'IPv6'],
    ["host=h password='unterminated", 'unterminated'],
  ])('rejects %s', (input, why) => {
    const e = badUrl(input);
    expect(e).toBeInstanceOf(DbcrateError);
    expect(e.code).toBe('E_BAD_URL');
    expect(e.message).toContain(why);
    expect(e.hint).toContain('postgres://USER:PASSWORD@HOST:PORT/DBNAME');
  });

  it('says a percent-encoded name that is not UTF-8 is not UTF-8 (not "does not exist" later)', () => {
    const e = badUrl('postgres://u@h/caf%E9');
    expect(e.code).toBe('E_BAD_URL');
    expect(e.message).toContain('the database name in');
    expect(e.message).toContain('is not valid UTF-8');
    expect(e.hint).toContain('RENAME TO');
  });

  it('never puts the password of a rejected URL in the error', () => {
    const e = badUrl('postgres://u:TopSecret123@h:0/d');
    expect(e.message).not.toContain('TopSecret123');
    expect(e.message).toContain('u:***@h:0/d');
  });

  it('registers the password so that redact() masks it anywhere', () => {
    parseConnectionString('postgres://u:Unique-Pw-7781@h/d');
    expect(redact('oops Unique-Pw-7781 leaked')).toBe('oops *** leaked');
  });
});

describe('maskConnectionString', () => {
  it.each([
    ['postgres://u:secret@h:5432/d', 'postgres://u:***@h:5432/d'],
    ['postgresql://u:s%40cr@t@h/d?sslmode=require', 'postgresql://u:***@h/d?sslmode=require'],
    ['postgres://u@h/d', 'postgres://u@h/d'],
    ['postgres://h:5432/d', 'postgres://h:5432/d'],
    ['postgres://u@h/d?password=abc&sslmode=disable', 'postgres://u@h/d?password=***&sslmode=disable'],
    ['postgres://u:pa?ss@h/d', 'postgres://u:***@h/d'],
    ['host=h password=secret user=u', 'host=h password=*** user=u'],
    ["host=h password='se cr\\'et' user=u", 'host=h password=*** user=u'],
    ['host=h password = secret', 'host=h password = ***'],
    ["password='never closed", 'password=***'],
  ])('%s → %s', (input, masked) => {
    expect(maskConnectionString(input)).toBe(masked);
  });
});

describe('toLibpqEnv', () => {
  it('puts every part, the password included, into PG* variables', () => {
    const r = toLibpqEnv(
      'postgres://alice:pw%2Fx@db:6000/sales?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x',
    );
    expect(r).toEqual({
      env: {
        PGHOST: 'db',
        PGPORT: '6000',
        PGUSER: 'alice',
        PGDATABASE: 'sales',
        PGSSLMODE: 'verify-full',
        PGPASSWORD: 'pw/x',
        PGSSLROOTCERT: '/ca.pem',
        PGAPPNAME: 'x',
      },
      dbname: 'sales',
      dbnameArg: 'sales',
    });
  });

  it('leaves PGPASSWORD out when the URL has no password', () => {
    expect(toLibpqEnv('postgres://u@h/d').env.PGPASSWORD).toBeUndefined();
  });

  it('gives a safe -d argument for names that libpq would read as a conninfo', () => {
    expect(toLibpqEnv('postgres://u@h/a%3Db').dbnameArg).toBe("dbname='a=b'");
    expect(toLibpqEnv("postgres://u@h/o'k%3D").dbnameArg).toBe("dbname='o\\'k='");
  });

  it('childEnv drops inherited target variables but keeps PGPASSWORD/PGPASSFILE and the rest', () => {
    const env = childEnv(
      { PGHOST: 'h' },
      {
        PATH: '/bin',
        PGHOST: 'evil',
        PGSERVICE: 's',
        PGDATABASE: 'other',
        PGPASSWORD: 'p',
        PGPASSFILE: '/pf',
      },
    );
    expect(env).toEqual({ PATH: '/bin', PGHOST: 'h', PGPASSWORD: 'p', PGPASSFILE: '/pf' });
  });
});
