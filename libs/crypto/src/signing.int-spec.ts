/**
 * Signatures are checkable without dbcrate: stock GnuPG verifies what we sign, and
 * refuses it once the signed bytes change.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GpgHome, testSigning, type TestSigning } from '@dbcrate/testing';
import { loadSigningKey, loadTrustedKeys, signDetached, verifyDetached } from './signing';

let gpg: GpgHome;
let signer: TestSigning;
let dir: string;

beforeAll(async () => {
  gpg = new GpgHome();
  signer = await testSigning('gpg-interop');
  await gpg.import(signer.publicArmored);
  dir = mkdtempSync(join(tmpdir(), 'dbcrate-sig-'));
});
afterAll(() => {
  gpg.remove();
  rmSync(dir, { recursive: true, force: true });
  rmSync(signer.dir, { recursive: true, force: true });
});

it('gpg --verify checks a detached manifest signature, and refuses changed bytes', async () => {
  const manifest = Buffer.from(JSON.stringify({ format: 'dbcrate.dump.manifest', n: 1 }, null, 2) + '\n');
  writeFileSync(join(dir, 'm.json'), manifest);
  writeFileSync(join(dir, 'm.json.sig'), await signDetached(manifest, signer.key));
  const good = await gpg.run(['--verify', join(dir, 'm.json.sig'), join(dir, 'm.json')]);
  expect(good.stderr).toMatch(/Good signature from "gpg-interop"/);
  expect(good.code).toBe(0);
  expect(good.stderr).toContain(signer.fingerprint.slice(-16));

  writeFileSync(join(dir, 'm.json'), manifest.toString().replace('"n": 1', '"n": 2'));
  const bad = await gpg.run(['--verify', join(dir, 'm.json.sig'), join(dir, 'm.json')]);
  expect(bad.stderr).toMatch(/BAD signature/);
  expect(bad.code).not.toBe(0);
});

it('a key made by gpg with a signing subkey signs, and the signer is named by its primary fingerprint', async () => {
  const made = await gpg.run(['--passphrase', '', '--quick-gen-key', 'gpg-host', 'ed25519', 'cert', 'never']);
  expect(made.code).toBe(0);
  const listed = (await gpg.run(['--with-colons', '--list-keys', 'gpg-host'])).stdout.toString();
  const primary = /^fpr:+([0-9A-F]{40}):/m.exec(listed)![1];
  expect(
    (await gpg.run(['--passphrase', '', '--quick-add-key', primary, 'ed25519', 'sign', 'never'])).code,
  ).toBe(0);
  const secret = (await gpg.run(['--armor', '--export-secret-keys', primary])).stdout.toString();
  const pub = (await gpg.run(['--armor', '--export', primary])).stdout.toString();
  const key = await loadSigningKey(secret);
  const trusted = await loadTrustedKeys([pub]);
  const data = Buffer.from('manifest bytes\n');
  const v = await verifyDetached(data, await signDetached(data, key), { trusted });
  expect(v).toEqual({ trusted: true, signer: primary });
  // and gpg agrees
  writeFileSync(join(dir, 'g.json'), data);
  writeFileSync(join(dir, 'g.json.sig'), await signDetached(data, key));
  expect((await gpg.run(['--verify', join(dir, 'g.json.sig'), join(dir, 'g.json')])).code).toBe(0);
});
