import { homedir } from 'node:os';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { displayUrl, parseSize, parseStorageUrl } from './storage-url';

function badUrl(url: string, env: NodeJS.ProcessEnv = {}): DbcrateError {
  try {
    parseStorageUrl(url, env);
  } catch (e) {
    expect(e).toBeInstanceOf(DbcrateError);
    expect((e as DbcrateError).code).toBe(ErrorCodes.BAD_URL);
    return e as DbcrateError;
  }
  throw new Error(`${url} parsed`);
}

describe('parseStorageUrl', () => {
  describe('file://', () => {
    it('takes an absolute path', () => {
      expect(parseStorageUrl('file:///var/backups/db/')).toEqual({
        kind: 'fs',
        root: '/var/backups/db',
        displayUrl: 'file:///var/backups/db/',
      });
      expect(parseStorageUrl('file:///srv/with%20space').kind).toBe('fs');
      expect((parseStorageUrl('file:///srv/with%20space') as { root: string }).root).toBe('/srv/with space');
      expect((parseStorageUrl('file://localhost/x') as { root: string }).root).toBe('/x');
    });

    it('refuses relative paths and hosts with the accepted forms in the hint', () => {
      const e = badUrl('file://relative/path');
      expect(e.message).toMatch(/"relative" is read as a host name/);
      expect(e.hint).toMatch(/file:\/\/\//);
      const e2 = badUrl('/var/backups');
      expect(e2.message).toMatch(/no scheme/);
      expect(e2.hint).toContain('file:///var/backups');
      expect(badUrl('backups').hint).toContain('s3://bucket/prefix');
    });

    it('refuses query parameters', () => {
      expect(badUrl('file:///x?fsync=no').message).toContain('unknown query parameter "fsync"');
    });
  });

  describe('s3://', () => {
    it('parses bucket, prefix, endpoint, region, path style and tuning', () => {
      const c = parseStorageUrl(
        's3://my-bucket/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-central-1&path_style=true&part_size=16MiB&queue_size=2',
      );
      expect(c).toMatchObject({
        kind: 's3',
        bucket: 'my-bucket',
        prefix: 'some/prefix',
        endpoint: 'http://127.0.0.1:9000',
        region: 'eu-central-1',
        forcePathStyle: true,
        partSize: 16 * 1024 * 1024,
        queueSize: 2,
        checksums: 'WHEN_REQUIRED',
      });
    });

    it('defaults: no prefix, virtual-hosted for named endpoints, path style for IPs', () => {
      expect(parseStorageUrl('s3://bucket')).toMatchObject({
        prefix: '',
        forcePathStyle: false,
        region: undefined,
      });
      expect(parseStorageUrl('s3://bucket?endpoint=https://s3.example.com')).toMatchObject({
        forcePathStyle: false,
      });
      expect(parseStorageUrl('s3://bucket?endpoint=http://localhost:9000')).toMatchObject({
        forcePathStyle: true,
      });
      expect(parseStorageUrl('s3://bucket?endpoint=http://10.0.0.1:9000&path_style=false')).toMatchObject({
        forcePathStyle: false,
      });
    });

    it('checksums can be switched to when_supported', () => {
      expect(parseStorageUrl('s3://bucket?checksums=when_supported')).toMatchObject({
        checksums: 'WHEN_SUPPORTED',
      });
      expect(badUrl('s3://bucket?checksums=always').message).toMatch(/when_required or when_supported/);
    });

    it('refuses credentials in the URL, naming the env vars and profile, without echoing them', () => {
      const e = badUrl('s3://AKIAXXXX:s3cr3tvalue@bucket/prefix');
      expect(e.message).toMatch(/credentials are never taken from the URL/);
      expect(e.hint).toMatch(/AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
      expect(e.hint).toMatch(/AWS_PROFILE/);
      expect(e.hint).toMatch(/profile=/);
      expect(`${e.message} ${e.hint}`).not.toContain('s3cr3tvalue');
      expect(`${e.message} ${e.hint}`).not.toContain('AKIAXXXX');
      const e2 = badUrl('s3://bucket?endpoint=http://key:s3cr3tvalue@host:9000');
      expect(`${e2.message} ${e2.hint}`).not.toContain('s3cr3tvalue');
    });

    it('names an unknown or repeated query parameter', () => {
      const e = badUrl('s3://bucket/p?endpoint=http://h:1&regoin=x');
      expect(e.message).toContain('unknown query parameter "regoin"');
      expect(e.hint).toContain('region');
      expect(badUrl('s3://bucket/p?region=a&region=b').message).toContain('"region" is given twice');
      expect(badUrl('s3://bucket/p?secret_access_key=x').message).toContain('"secret_access_key"');
    });

    it('validates bucket, endpoint, part size and queue size', () => {
      expect(badUrl('s3:///prefix').message).toMatch(/bucket name is missing/);
      expect(badUrl('s3://b/x').message).toMatch(/not a valid bucket name/);
      expect(badUrl('s3://bucket:9000/x').message).toMatch(/endpoint=/);
      expect(badUrl('s3://bucket?endpoint=ftp://h').message).toMatch(/http:\/\/ or https:\/\//);
      expect(badUrl('s3://bucket?endpoint=nonsense').message).toMatch(/not a URL/);
      expect(badUrl('s3://bucket?part_size=1MiB').message).toMatch(/5MiB to 5GiB/);
      expect(badUrl('s3://bucket?part_size=lots').message).toMatch(/not a size/);
      expect(badUrl('s3://bucket?queue_size=0').message).toMatch(/1\.\.16/);
      expect(badUrl('s3://bucket?path_style=maybe').message).toMatch(/true or false/);
      // Dot segments are resolved by URL parsing, so they can never climb out of the prefix.
      expect(parseStorageUrl('s3://bucket/a/../b')).toMatchObject({ prefix: 'b' });
    });
  });

  describe('sftp://', () => {
    it('parses user, host, port, path and host key pin', () => {
      const fp = 'SHA256:' + 'a'.repeat(43);
      expect(
        parseStorageUrl(`sftp://backup@db.example.com:2222/srv/backups/?host_key=${fp}&identity=/k/id`),
      ).toEqual({
        kind: 'sftp',
        host: 'db.example.com',
        port: 2222,
        user: 'backup',
        root: '/srv/backups',
        hostKeys: [fp],
        knownHostsFile: `${homedir()}/.ssh/known_hosts`,
        identityFile: '/k/id',
        fsync: 'require',
        displayUrl: `sftp://backup@db.example.com:2222/srv/backups/?host_key=${fp}&identity=/k/id`,
      });
    });

    it('defaults: port 22, known_hosts, identity from DBCRATE_SFTP_IDENTITY, "/~/" is the login directory', () => {
      const c = parseStorageUrl('sftp://u@h/~/backups?known_hosts=/etc/kh', {
        DBCRATE_SFTP_IDENTITY: '/id/key',
      });
      expect(c).toMatchObject({
        port: 22,
        root: 'backups',
        knownHostsFile: '/etc/kh',
        identityFile: '/id/key',
        hostKeys: [],
      });
      expect(parseStorageUrl('sftp://u@h', {})).toMatchObject({ root: '.' });
      expect(parseStorageUrl('sftp://u@[::1]:22/x', {})).toMatchObject({ host: '::1' });
    });

    it('accepts several pins (key rotation)', () => {
      const a = 'SHA256:' + 'a'.repeat(43);
      const b = 'SHA256:' + 'b'.repeat(43);
      expect(parseStorageUrl(`sftp://u@h/x?host_key=${a}&host_key=${b}`)).toMatchObject({ hostKeys: [a, b] });
    });

    it('refuses a password in the URL and points to DBCRATE_SFTP_PASSWORD', () => {
      const e = badUrl('sftp://user:hunter2pass@host/x');
      expect(e.message).toMatch(/password is never taken from the URL/);
      expect(e.hint).toMatch(/DBCRATE_SFTP_PASSWORD/);
      expect(`${e.message} ${e.hint}`).not.toContain('hunter2pass');
    });

    it('validates host key pins, paths and parameters', () => {
      expect(badUrl('sftp://u@h/x?host_key=md5:aa:bb').message).toMatch(/not a SHA256 fingerprint/);
      expect(badUrl('sftp://u@h/x?known_hosts=rel/kh').message).toMatch(/absolute/);
      expect(badUrl('sftp://u@h/x?identity=id_rsa').message).toMatch(/absolute/);
      expect(badUrl(`sftp://u@h/x?known_hosts=/kh&host_key=SHA256:${'a'.repeat(43)}`).message).toMatch(
        /not both/,
      );
      expect(badUrl('sftp://u@h/x?password=p').message).toContain('unknown query parameter "password"');
      expect(badUrl('sftp:///x').message).toMatch(/host is missing/);
      expect(parseStorageUrl('sftp://u@h/a/%2e%2e/b', {})).toMatchObject({ root: '/b' });
    });
  });

  it('refuses other schemes and garbage', () => {
    expect(badUrl('gs://bucket/x').message).toMatch(/unsupported scheme "gs:"/);
    expect(badUrl('').message).toMatch(/empty/);
    expect(badUrl('http://host/x').hint).toContain('sftp://user@host');
  });
});

describe('displayUrl', () => {
  it('strips userinfo secrets', () => {
    expect(displayUrl('sftp://user:pw1234@host/x')).toBe('sftp://user@host/x');
    expect(displayUrl('s3://AKIA:secretkey@bucket/p')).toBe('s3://bucket/p');
    expect(displayUrl('file:///a/b')).toBe('file:///a/b');
    expect(displayUrl('not a url password=abcd1234')).not.toContain('abcd1234');
  });
});

describe('parseSize', () => {
  it('reads binary sizes', () => {
    expect(parseSize('5242880')).toBe(5 * 1024 * 1024);
    expect(parseSize('16MiB')).toBe(16 * 1024 * 1024);
    expect(parseSize('16m')).toBe(16 * 1024 * 1024);
    expect(parseSize('1GiB')).toBe(1024 ** 3);
    expect(parseSize('16MB')).toBeUndefined();
    expect(parseSize('x')).toBeUndefined();
  });
});
