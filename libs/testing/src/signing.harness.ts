import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  generateSigningKey,
  loadSigningKey,
  loadTrustedKeys,
  type SigningKey,
  type TrustPolicy,
} from '@dbcrate/crypto';
import { giveToPostgres } from './pitr.harness';

export interface TestSigning {
  /** The unlocked signing key (for library calls). */
  key: SigningKey;
  /** Trusting exactly this signer. */
  trust: TrustPolicy;
  fingerprint: string;
  /** Files for the CLI: the private signing key (0600) and its public key (0644). */
  keyFile: string;
  pubFile: string;
  publicArmored: string;
  dir: string;
}

/**
 * A host signing key for tests, in files the postgres OS user can read too (archive_command
 * runs as postgres). No passphrase: what the tests prove does not depend on one.
 */
export async function testSigning(name = 'test-host'): Promise<TestSigning> {
  const pair = await generateSigningKey({ name });
  const dir = mkdtempSync(join(tmpdir(), 'dbcrate-signing-'));
  const keyFile = join(dir, `${name}.sign.key.asc`);
  const pubFile = join(dir, `${name}.sign.pub.asc`);
  writeFileSync(keyFile, pair.privateArmored, { mode: 0o600 });
  writeFileSync(pubFile, pair.publicArmored, { mode: 0o644 });
  chmodSync(dir, 0o755);
  try {
    giveToPostgres(keyFile, 0o600);
  } catch {
    // no postgres OS user: only tests that run as the current user
  }
  return {
    key: await loadSigningKey(pair.privateArmored),
    trust: { trusted: await loadTrustedKeys([pair.publicArmored]) },
    fingerprint: pair.fingerprint,
    keyFile,
    pubFile,
    publicArmored: pair.publicArmored,
    dir,
  };
}

export function removeTestSigning(s: TestSigning): void {
  rmSync(s.dir, { recursive: true, force: true });
}

export interface GpgRun {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** gpg in a throwaway home (created on first use), batch mode; for "checkable without dbcrate" tests. */
export class GpgHome {
  readonly dir = mkdtempSync(join(tmpdir(), 'dbcrate-gnupg-'));

  constructor() {
    chmodSync(this.dir, 0o700);
  }

  run(args: string[], input?: Buffer | string): Promise<GpgRun> {
    return new Promise((resolve, reject) => {
      const child = spawn(
        'gpg',
        ['--homedir', this.dir, '--batch', '--no-tty', '--pinentry-mode', 'loopback', ...args],
        {
          stdio: ['pipe', 'pipe', 'pipe'],
        },
      );
      const out: Buffer[] = [];
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
      child.stdin.on('error', () => undefined);
      child.stdin.end(input ?? Buffer.alloc(0));
    });
  }

  async import(armored: string): Promise<void> {
    const r = await this.run(['--import'], armored);
    if (r.code !== 0) throw new Error(`gpg --import failed: ${r.stderr}`);
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}
