import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, tableChecksums } from '@dbcrate/postgres';
import { runCli } from '@dbcrate/testing';

export const PASSPHRASE = 'e2e-Passphrase-7f3a9c';

export interface KeyPair {
  dir: string;
  pub: string;
  priv: string;
  fingerprint: string;
}

/** Generate an organisation key pair through the CLI, as a user would. */
// Key pairs made by a test file are removed when it ends (they hold private keys).
const keyDirs: string[] = [];
afterAll(async () => {
  await Promise.all(keyDirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
});

export async function generateKeys(name: string): Promise<KeyPair> {
  const dir = await mkdtemp(join(tmpdir(), `dbcrate-keys-${name}-`));
  keyDirs.push(dir);
  const r = await runCli(
    ['keys', 'generate', '--name', name, '--out', dir, '--passphrase-env', 'E2E_PASSPHRASE'],
    {
      env: { E2E_PASSPHRASE: PASSPHRASE },
    },
  );
  if (r.code !== 0) throw new Error(`keys generate failed: ${r.stderr}`);
  const fingerprint = /fingerprint ([0-9A-F]+)/.exec(r.stdout)?.[1];
  if (!fingerprint) throw new Error(`no fingerprint in: ${r.stdout}`);
  expect(await readFile(join(dir, `${name}.key.asc`), 'utf8')).toContain('BEGIN PGP PRIVATE KEY BLOCK');
  return { dir, pub: join(dir, `${name}.pub.asc`), priv: join(dir, `${name}.key.asc`), fingerprint };
}

export async function checksums(url: string): Promise<unknown[]> {
  const c = await connect(url);
  try {
    return await tableChecksums(c);
  } finally {
    await c.end();
  }
}
