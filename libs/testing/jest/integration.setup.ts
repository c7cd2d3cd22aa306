import { removeTestSigning, testSigning, type TestSigning } from '../src/signing.harness';

// Integration and end-to-end tests start real servers and move real data.
jest.setTimeout(300_000);

// Backups are signed and readers check signatures (docs/signing.md): every CLI run of a
// test gets a host signing key and trusts it, unless the test says otherwise in its env.
let signing: TestSigning | undefined;
beforeAll(async () => {
  signing = await testSigning();
  process.env.DBCRATE_SIGNING_KEY = signing.keyFile;
  process.env.DBCRATE_TRUST = signing.pubFile;
});
afterAll(() => {
  if (signing) removeTestSigning(signing);
  delete process.env.DBCRATE_SIGNING_KEY;
  delete process.env.DBCRATE_TRUST;
});
