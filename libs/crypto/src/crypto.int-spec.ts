/**
 * Our OpenPGP against real GnuPG (the customer's escape hatch): gpg decrypts what we
 * write, we decrypt what gpg writes, gpg imports our keys and we read gpg's keys, and
 * `gpg --decrypt | zstd -d` restores a backup byte-exactly. Every gpg runs in a
 * throwaway GNUPGHOME.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getCodec } from '@dbcrate/compression';
import { ErrorCodes } from '@dbcrate/core';
import type { DecryptionKey, RecipientKey } from './cipher';
import { getCipher } from './crypto.registry';
import { generateKeyPair, loadDecryptionKey, loadRecipientKey, type GeneratedKeyPair } from './keys';
import { recipientKeyIds } from './pgp-header.parser';
import { failure, noise, sha256, through } from './crypto.fixture';

jest.setTimeout(300_000);

const IMPLEMENTATIONS = ['native', 'openpgpjs'] as const;

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function run(
  cmd: string,
  args: string[],
  opts: { input?: Buffer; env?: NodeJS.ProcessEnv } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
    child.stdin.on('error', () => undefined); // gpg may exit before reading everything
    child.stdin.end(opts.input ?? Buffer.alloc(0));
  });
}

const PASSPHRASE = 'gpg interop passphrase';
let dir: string;
let home: string;
let passFile: string;
let ours: GeneratedKeyPair;
let oursR: RecipientKey;
let oursK: DecryptionKey;

/** gpg in the throwaway home, non-interactive, passphrase from a file (keeps stdin for data). */
function gpg(args: string[], input?: Buffer): Promise<Run> {
  return run(
    'gpg',
    [
      '--batch',
      '--no-tty',
      '--pinentry-mode',
      'loopback',
      '--passphrase-file',
      passFile,
      '--status-fd',
      '2',
      ...args,
    ],
    { input, env: { GNUPGHOME: home } },
  );
}

async function gpgOk(args: string[], input?: Buffer): Promise<Run> {
  const r = await gpg(args, input);
  if (r.code !== 0) throw new Error(`gpg ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
  return r;
}

/** Generate a key pair with gpg itself (what a customer bringing their own key has). */
async function gpgKey(
  uid: string,
  kind: 'cv25519' | 'rsa4096',
): Promise<{ fpr: string; pub: string; sec: string }> {
  const [primary, sub] = kind === 'cv25519' ? ['ed25519', 'cv25519'] : ['rsa4096', 'rsa4096'];
  await gpgOk(['--quick-gen-key', uid, primary, 'sign,cert', 'never']);
  const list = (await gpgOk(['--with-colons', '--list-keys', uid])).stdout.toString();
  const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(list)![1];
  await gpgOk(['--quick-add-key', fpr, sub, 'encr', 'never']);
  const pub = (await gpgOk(['--armor', '--export', fpr])).stdout.toString();
  const sec = (await gpgOk(['--armor', '--export-secret-keys', fpr])).stdout.toString();
  return { fpr, pub, sec };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'dbcrate-gpg-'));
  home = join(dir, 'h');
  await run('mkdir', ['-m', '700', home]);
  passFile = join(dir, 'pass');
  await writeFile(passFile, `${PASSPHRASE}\n`, { mode: 0o600 });
  ours = await generateKeyPair({
    name: 'dbcrate test org',
    email: 'backup@org.example',
    passphrase: PASSPHRASE,
  });
  oursR = await loadRecipientKey(ours.publicArmored);
  oursK = await loadDecryptionKey(ours.privateArmored, PASSPHRASE);
  await gpgOk(['--import'], Buffer.from(ours.privateArmored));
});

afterAll(async () => {
  await run('gpgconf', ['--kill', 'gpg-agent'], { env: { GNUPGHOME: home } });
  await rm(dir, { recursive: true, force: true });
});

describe.each(IMPLEMENTATIONS)('GnuPG reads what we write (%s)', (implementation) => {
  it('imports our generated key pair (v4, ed25519 + cv25519)', async () => {
    const list = (await gpgOk(['--with-colons', '--list-secret-keys', ours.fingerprint])).stdout.toString();
    expect(list).toMatch(new RegExp(`^fpr:+${ours.fingerprint}:`, 'm'));
    expect(list).toMatch(/^sec:[^:]*:255:22:/m); // EdDSA, 255 bits
    expect(list).toMatch(/^ssb:[^:]*:255:18:/m); // ECDH (cv25519)
  });

  it.each([
    ['0 bytes', 0],
    ['1 byte', 1],
    ['6 MiB', 6 * 1024 * 1024],
  ])('gpg --decrypt opens our %s byte-exactly, with a good MDC and AES-256', async (_l, size) => {
    const data = noise(size, size + 7);
    const ct = await through(data, getCipher('openpgp', { implementation }).encryptor([oursR]));
    const r = await gpgOk(['--decrypt'], ct);
    expect(sha256(r.stdout)).toBe(sha256(data));
    expect(r.stderr).toMatch(/\[GNUPG:\] DECRYPTION_OKAY/);
    expect(r.stderr).toMatch(/\[GNUPG:\] GOODMDC/);
    expect(r.stderr).toMatch(/\[GNUPG:\] DECRYPTION_INFO 2 9/); // MDC, cipher 9 = AES-256
    expect(r.stderr).not.toMatch(/WARNING/);
  });

  it('gpg --decrypt opens a two-recipient message with either key', async () => {
    const other = await gpgKey(`second org ${implementation} <second@org.example>`, 'cv25519');
    const otherR = await loadRecipientKey(other.pub);
    const data = noise(100_000, 3);
    const ct = await through(data, getCipher('openpgp', { implementation }).encryptor([oursR, otherR]));
    expect(sha256((await gpgOk(['--decrypt'], ct)).stdout)).toBe(sha256(data));
    // Without our secret key, gpg must use the other recipient's.
    await gpgOk(['--delete-secret-keys', '--yes', ours.fingerprint]);
    try {
      expect(sha256((await gpgOk(['--decrypt'], ct)).stdout)).toBe(sha256(data));
    } finally {
      await gpgOk(['--import'], Buffer.from(ours.privateArmored));
    }
  });

  it('gpg detects our tampered output too', async () => {
    const ct = Buffer.from(
      await through(noise(200_000), getCipher('openpgp', { implementation }).encryptor([oursR])),
    );
    ct[ct.length - 4] ^= 1;
    const r = await gpg(['--decrypt'], ct);
    expect(r.code).not.toBe(0);
  });
});

describe.each(IMPLEMENTATIONS)('we read what GnuPG writes (%s)', (implementation) => {
  let gpgPub: { fpr: string; pub: string; sec: string };

  beforeAll(async () => {
    await gpgOk(['--import'], Buffer.from(ours.publicArmored));
    gpgPub = await gpgKey(`gpg only ${implementation} <gpg@org.example>`, 'cv25519');
  });

  it.each([
    ['default compression (ZLIB)', []],
    ['no compression', ['--compress-algo', 'none']],
    ['anonymous recipient (--throw-keyids)', ['--throw-keyids']],
  ])('decrypts gpg --encrypt to our public key: %s', async (_l, extra) => {
    const data = Buffer.concat([noise(2_000_000, 5), Buffer.alloc(3_000_000, 'a')]);
    const ct = (await gpgOk(['--trust-model', 'always', ...extra, '--encrypt', '-r', ours.fingerprint], data))
      .stdout;
    expect(sha256(await through(ct, getCipher('openpgp', { implementation }).decryptor([oursK])))).toBe(
      sha256(data),
    );
  });

  it('reads keys gpg generated (cv25519 and RSA-4096), protected by a passphrase', async () => {
    const rsa = await gpgKey(`rsa org ${implementation} <rsa@org.example>`, 'rsa4096');
    for (const k of [gpgPub, rsa]) {
      const recipient = await loadRecipientKey(k.pub);
      expect(recipient.fingerprint).toBe(k.fpr);
      expect((await failure(loadDecryptionKey(k.sec))).code).toBe(ErrorCodes.PASSPHRASE);
      const key = await loadDecryptionKey(k.sec, PASSPHRASE);
      const data = noise(50_000, 11);
      const ct = await through(data, getCipher('openpgp', { implementation }).encryptor([recipient]));
      expect(sha256(await through(ct, getCipher('openpgp', { implementation }).decryptor([key])))).toBe(
        sha256(data),
      );
      expect(sha256((await gpgOk(['--decrypt'], ct)).stdout)).toBe(sha256(data));
    }
  });

  it('names gpg recipients when our key is not one of them', async () => {
    const ct = (await gpgOk(['--trust-model', 'always', '--encrypt', '-r', gpgPub.fpr], Buffer.from('x')))
      .stdout;
    const [keyId] = await recipientKeyIds(ct);
    const list = (await gpgOk(['--with-colons', '--list-keys', gpgPub.fpr])).stdout.toString();
    expect(list).toContain(keyId); // the cv25519 subkey gpg encrypted to
    const f = await failure(
      through(
        ct,
        getCipher('openpgp', { implementation }).decryptor([oursK], { expectedRecipients: [gpgPub.fpr] }),
      ),
    );
    expect(f.code).toBe(ErrorCodes.WRONG_KEY);
    expect(f.message).toContain(keyId);
    expect(f.message).toContain(gpgPub.fpr);
  });
});

describe.each(IMPLEMENTATIONS)(
  'backup escape hatch (%s): our zstd + our encryption, then gpg --decrypt | zstd -d',
  (implementation) => {
    it.each([['native'], ['wasm']] as const)('restores byte-exactly (%s zstd)', async (zstd) => {
      const data = Buffer.concat([
        noise(4_000_000, 21),
        Buffer.from('COPY public.t (id) FROM stdin;\n'.repeat(200_000)),
      ]);
      const codec = getCodec('zstd', { implementation: zstd });
      const stored = await through(
        data,
        codec.compressor(),
        getCipher('openpgp', { implementation }).encryptor([oursR]),
      );
      const file = join(dir, `backup-${implementation}-${zstd}.dump.zst.pgp`);
      await writeFile(file, stored);
      const r = await run(
        'bash',
        [
          '-c',
          'set -o pipefail; gpg --batch --no-tty --pinentry-mode loopback --passphrase-file "$1" --decrypt "$2" | zstd -d -c',
          'bash',
          passFile,
          file,
        ],
        { env: { GNUPGHOME: home } },
      );
      expect(r.code).toBe(0);
      expect(sha256(r.stdout)).toBe(sha256(data));
    });
  },
);
