import { z } from 'zod';
import { DbcrateError } from '@dbcrate/core';
import { booleanSetting, envName, intSetting, resolveSettings } from './config.loader';

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

  it('maps camelCase to DBCRATE_ env names', () => {
    expect(envName('passphraseEnv')).toBe('DBCRATE_PASSPHRASE_ENV');
  });
});
