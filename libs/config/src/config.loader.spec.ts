import { z } from 'zod';
import { DbcrateError } from '@dbcrate/core';
import { booleanSetting, checkConfigKeys, envName, intSetting, resolveSettings } from './config.loader';

const schema = z.object({
  databaseId: z.string().min(1),
  recipient: z.array(z.string()).min(1),
  jobs: intSetting(1, 64).default(1),
  clean: booleanSetting.default(false),
});

describe('resolveSettings', () => {
  it('prefers flags over env over file', () => {
    const r = resolveSettings(schema, {
      flags: { databaseId: 'flag', recipient: [] },
      env: { DBCRATE_DATABASE_ID: 'env', DBCRATE_RECIPIENT: 'a.asc, b.asc', DBCRATE_JOBS: '4' },
      file: { 'database-id': 'file', clean: 'on' },
    });
    expect(r).toEqual({ databaseId: 'flag', recipient: ['a.asc', 'b.asc'], jobs: 4, clean: true });
  });

  it('falls back to the file, in kebab or snake case', () => {
    const r = resolveSettings(schema, { flags: {}, env: {}, file: { database_id: 'x', recipient: ['k'] } });
    expect(r.databaseId).toBe('x');
    expect(r.jobs).toBe(1);
  });

  it('names the setting that is wrong and where to set it', () => {
    try {
      resolveSettings(schema, { flags: { databaseId: 'x', recipient: ['k'], jobs: '0' }, env: {} });
      throw new Error('should have thrown');
    } catch (e) {
      expect(e).toBeInstanceOf(DbcrateError);
      expect((e as DbcrateError).message).toContain('"jobs"');
      expect((e as DbcrateError).hint).toContain('DBCRATE_JOBS');
      expect((e as DbcrateError).exitCode).toBe(2);
    }
  });

  it("says which setting is missing and what it is for, not zod's text", () => {
    const s = z.object({ from: z.string().min(1, 'the destination URL to read from') });
    const e = caught(() => resolveSettings(s, { flags: {}, env: {} }));
    expect(e.message).toBe('missing --from (the destination URL to read from)');
    expect(e.message).not.toMatch(/received undefined|Invalid input/);
    expect(e.hint).toContain('DBCRATE_FROM');
  });

  it('says where a bad value came from and what was expected', () => {
    const s = z.object({ mode: z.enum(['fast', 'safe']), n: z.number().optional() });
    const e = caught(() => resolveSettings(s, { flags: {}, env: { DBCRATE_MODE: 'quick' } }));
    expect(e.message).toBe('setting "mode" (from DBCRATE_MODE) is invalid: expected one of fast, safe');
    const f = caught(() => resolveSettings(s, { flags: { mode: 'fast', n: 'x' }, env: {} }));
    expect(f.message).toBe('setting "n" (from the flag) is invalid: expected a number');
  });

  it('refuses unknown keys in a config file, suggesting the closest known one', () => {
    const known = new Set(['recipient', 'database-id', 'from']);
    expect(() =>
      checkConfigKeys({ recipient: 'a', database_id: 'x', databaseId: 'y' }, known, 'c.yaml'),
    ).not.toThrow();
    const e = caught(() => checkConfigKeys({ recipients: ['a'] }, known, 'c.yaml'));
    expect(e.message).toBe('unknown setting "recipients" in config file c.yaml');
    expect(e.hint).toBe('did you mean "recipient"?');
    expect(e.exitCode).toBe(2);
    expect(caught(() => checkConfigKeys({ colour: 1 }, known, 'c.yaml')).hint).not.toContain('did you mean');
  });

  it('maps camelCase to DBCRATE_ env names', () => {
    expect(envName('passphraseEnv')).toBe('DBCRATE_PASSPHRASE_ENV');
  });
});

function caught(fn: () => unknown): DbcrateError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DbcrateError);
    return e as DbcrateError;
  }
  throw new Error('expected a throw');
}
