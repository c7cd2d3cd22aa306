import { DbcrateError, ErrorCodes, registerSecret } from '@dbcrate/core';
import { mapFsError } from './fs.storage';
import { mapS3Error } from './s3.storage';
import { mapSftpError } from './sftp.storage';
import { checkKey, isTempName, tempNameFor } from './storage.util';

const WHERE = 's3://bucket/p';

function sdkError(name: string, status?: number, message = ''): Error {
  return Object.assign(new Error(message || name), { name, $metadata: { httpStatusCode: status } });
}

describe('mapS3Error', () => {
  it.each([
    [sdkError('NoSuchKey', 404), ErrorCodes.STORAGE_NOT_FOUND],
    [sdkError('NotFound', 404, 'UnknownError'), ErrorCodes.STORAGE_NOT_FOUND],
    [sdkError('NoSuchBucket', 404), ErrorCodes.STORAGE_NOT_FOUND],
    [sdkError('AccessDenied', 403), ErrorCodes.STORAGE_DENIED],
    [sdkError('Forbidden', 403, 'UnknownError'), ErrorCodes.STORAGE_DENIED],
    [sdkError('SignatureDoesNotMatch', 403), ErrorCodes.STORAGE_DENIED],
    [sdkError('InvalidAccessKeyId', 403), ErrorCodes.STORAGE_DENIED],
    [
      sdkError('CredentialsProviderError', undefined, 'Could not load credentials from any providers'),
      ErrorCodes.STORAGE_DENIED,
    ],
    [sdkError('PreconditionFailed', 412), ErrorCodes.STORAGE_CONFLICT],
    [
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' }),
      ErrorCodes.STORAGE_UNREACHABLE,
    ],
    [
      sdkError('TimeoutError', undefined, 'Socket timed out without establishing a connection'),
      ErrorCodes.STORAGE_UNREACHABLE,
    ],
    [
      Object.assign(new Error('getaddrinfo ENOTFOUND nowhere'), { code: 'ENOTFOUND' }),
      ErrorCodes.STORAGE_UNREACHABLE,
    ],
    [sdkError('InternalError', 500), ErrorCodes.STORAGE_IO],
  ])('%s → %s', (err, code) => {
    const e = mapS3Error(err, 'write', '"k"', WHERE);
    expect(e).toBeInstanceOf(DbcrateError);
    expect(e.code).toBe(code);
    expect(e.message).toContain(WHERE);
  });

  it('hints at the bucket and the secret key', () => {
    expect(mapS3Error(sdkError('NoSuchBucket', 404), 'list', 'objects', WHERE).hint).toMatch(
      /create the bucket/,
    );
    expect(mapS3Error(sdkError('SignatureDoesNotMatch', 403), 'list', 'objects', WHERE).hint).toMatch(
      /AWS_SECRET_ACCESS_KEY/,
    );
    expect(mapS3Error(sdkError('CredentialsProviderError'), 'list', 'objects', WHERE).hint).toMatch(
      /AWS_ACCESS_KEY_ID/,
    );
  });

  it('never repeats a registered secret', () => {
    registerSecret('verysecretvalue123');
    const e = mapS3Error(sdkError('InternalError', 500, 'oops verysecretvalue123'), 'write', '"k"', WHERE);
    expect(e.message).not.toContain('verysecretvalue123');
  });
});

describe('mapFsError', () => {
  const err = (code: string): Error => Object.assign(new Error(code), { code });
  it.each([
    ['ENOENT', ErrorCodes.STORAGE_NOT_FOUND],
    ['EACCES', ErrorCodes.STORAGE_DENIED],
    ['EPERM', ErrorCodes.STORAGE_DENIED],
    ['EROFS', ErrorCodes.STORAGE_DENIED],
    ['ENOSPC', ErrorCodes.STORAGE_IO],
    ['EIO', ErrorCodes.STORAGE_IO],
    ['EEXIST', ErrorCodes.STORAGE_CONFLICT],
  ])('%s → %s', (code, expected) => {
    const e = mapFsError(err(code), 'write', '"k"', 'file:///x');
    expect(e.code).toBe(expected);
  });
  it('says what to do about a permission problem', () => {
    expect(mapFsError(err('EACCES'), 'write', '"k"', 'file:///x').hint).toMatch(/writable/);
    expect(mapFsError(err('ENOSPC'), 'write', '"k"', 'file:///x').hint).toMatch(/free space/);
  });
});

describe('mapSftpError', () => {
  it.each([
    [{ code: 2, message: 'No such file' }, ErrorCodes.STORAGE_NOT_FOUND],
    [{ code: 3, message: 'Permission denied' }, ErrorCodes.STORAGE_DENIED],
    [
      { level: 'client-authentication', message: 'All configured authentication methods failed' },
      ErrorCodes.STORAGE_DENIED,
    ],
    [
      { code: 'ECONNREFUSED', message: 'connect: Remote host refused connection' },
      ErrorCodes.STORAGE_UNREACHABLE,
    ],
    [
      { level: 'client-timeout', message: 'Timed out while waiting for handshake' },
      ErrorCodes.STORAGE_UNREACHABLE,
    ],
    [{ code: 4, message: 'Failure' }, ErrorCodes.STORAGE_IO],
  ])('%j → %s', (raw, code) => {
    expect(
      mapSftpError(Object.assign(new Error(raw.message), raw), 'write', '"k"', 'sftp://u@h/x').code,
    ).toBe(code);
  });
});

describe('keys', () => {
  it('refuses keys that could escape the root or collide with temp files', () => {
    for (const bad of ['', '/abs', 'a/../b', 'a//b', 'a/', './a', 'a\\b', `x/${tempNameFor('y')}`]) {
      expect(() => checkKey(bad)).toThrow(DbcrateError);
    }
    expect(() => checkKey('db/dumps/2025-01-01/x.dump.zst.pgp')).not.toThrow();
    expect(() => checkKey('.dbcrate-probe/1-abc')).not.toThrow();
  });
  it('recognises its own temp names only', () => {
    expect(isTempName(tempNameFor('seg'))).toBe(true);
    expect(isTempName('.hidden')).toBe(false);
    expect(isTempName('a.tmp-1234')).toBe(false);
  });
});
