/**
 * Signatures are checkable without dbcrate: stock GnuPG verifies what we sign, and
 * refuses it once the signed bytes change.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GpgHome, testSigning, type TestSigning } from '@dbcrate/testing';
import { signDetached } from './signing';

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
