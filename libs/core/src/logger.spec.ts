import { PassThrough } from 'node:stream';
import { createLogger } from './logger';
import { registerSecret } from './redact';

describe('logger', () => {
  it('never writes a secret: URL passwords, secret fields, registered values', async () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += d));
    const log = createLogger({ level: 'info', destination: out });
    registerSecret('registered-Secret-42');
    log.info(
      { url: 'postgres://u:pw-in-url-99@h/db', password: 'field-secret-77' },
      'connecting with registered-Secret-42',
    );
    log.error(new Error('failed for sftp://u:pw-in-err-55@host/x'));
    await new Promise((r) => setImmediate(r));
    expect(text).toContain('connecting with');
    for (const s of ['pw-in-url-99', 'field-secret-77', 'registered-Secret-42', 'pw-in-err-55'])
      expect(text).not.toContain(s);
  });

  it('pretty: one readable line per record, clearing a progress line first, secrets masked', async () => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += d));
    const log = createLogger({ level: 'info', destination: out, pretty: true });
    log.warn({ segment: '000000010000000000000003', url: 'sftp://u:pw-pretty-31@h/x' }, 'archive slow');
    await new Promise((r) => setImmediate(r));
    expect(text.startsWith('\r\x1b[K')).toBe(true);
    expect(text).toMatch(
      /\d\d:\d\d:\d\d\] WARN: archive slow segment=000000010000000000000003 url=sftp:\/\/u:\*\*\*@h\/x/,
    );
    expect(text).not.toContain('pw-pretty-31');
    expect(text).not.toContain('"level"');
    expect(text.trim().split('\n')).toHaveLength(1);
  });
});
