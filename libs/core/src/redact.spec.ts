import { MASK, redact, registerSecret } from './redact';
import { DbcrateError, ErrorCodes, toDbcrateError } from './errors';

describe('redact', () => {
  it('masks the password in URLs of any scheme', () => {
    expect(redact('connect postgres://alice:s3cr%40t@db:5432/app failed')).toBe(
      `connect postgres://alice:${MASK}@db:5432/app failed`,
    );
    expect(redact('sftp://bob:hunter22@host/path')).toBe(`sftp://bob:${MASK}@host/path`);
  });

  it('keeps URLs without a password readable', () => {
    expect(redact('postgres://alice@db/app')).toBe('postgres://alice@db/app');
  });

  it('masks key=value secrets in conninfo and env dumps', () => {
    expect(redact("host=db password='x y' user=a")).toBe(`host=db password=${MASK} user=a`);
    expect(redact('AWS_SECRET_ACCESS_KEY=abcd1234')).toBe(`AWS_SECRET_ACCESS_KEY=${MASK}`);
  });

  it('masks secrets in URL query strings, presigned URLs included', () => {
    const url =
      's3://bkt/p?endpoint=http://h&access_key_id=AKIA1&secret_access_key=SECRETX&session_token=TOKENX';
    expect(redact(url)).toBe(
      `s3://bkt/p?endpoint=http://h&access_key_id=AKIA1&secret_access_key=${MASK}&session_token=${MASK}`,
    );
    const presigned =
      'https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F2026&X-Amz-Security-Token=T0K&X-Amz-Signature=abcdef0123';
    const out = redact(presigned);
    for (const s of ['abcdef0123', 'T0K', 'AKIA%2F2026']) expect(out).not.toContain(s);
    expect(out).toContain('X-Amz-Algorithm=AWS4-HMAC-SHA256');
  });

  it('masks registered secrets wherever they appear', () => {
    registerSecret('correct-horse-battery');
    expect(redact('bad passphrase correct-horse-battery given')).toBe(`bad passphrase ${MASK} given`);
  });

  it('removes private key blocks', () => {
    expect(
      redact('-----BEGIN PGP PRIVATE KEY BLOCK-----\nabc\n-----END PGP PRIVATE KEY BLOCK-----'),
    ).not.toContain('abc');
  });
});

describe('errors', () => {
  it('maps codes to documented exit codes', () => {
    expect(new DbcrateError(ErrorCodes.INTEGRITY, 'x').exitCode).toBe(6);
    expect(new DbcrateError(ErrorCodes.TARGET_PRODUCTION, 'x').exitCode).toBe(8);
    expect(toDbcrateError(new Error('boom')).code).toBe(ErrorCodes.INTERNAL);
  });
});
