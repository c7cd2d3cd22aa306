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
});
