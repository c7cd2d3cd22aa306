import type { Command } from 'commander';
import { z } from 'zod';
import { booleanSetting } from '@dbcrate/config';

/**
 * The signing and trust flags, shared by producers (backup, basebackup, wal-push, agent)
 * and readers (restore, recover, wal-fetch, snapshots, windows); docs/signing.md.
 */
const collect = (v: string, prev: string[] = []) => [...prev, v];

export const signingSettings = {
  signingKey: z.string().min(1, "this host's signing key file (from dbcrate keys generate-signing)"),
  signingPassphraseEnv: z.string().optional(),
};

export const trustSettings = {
  // a list (flags, `trust: [...]`), or one string: a file, or a comma- or colon-separated list
  trust: z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(z.string())).optional(),
  allowUnsigned: booleanSetting.default(false),
};

export function signingFlags(cmd: Command): Command {
  return cmd
    .option(
      '--signing-key <FILE>',
      "this host's signing key (dbcrate keys generate-signing); what it writes is signed with it (required)",
    )
    .option('--signing-passphrase-env <VAR>', 'environment variable holding the signing key passphrase');
}

export function trustFlags(cmd: Command): Command {
  return cmd
    .option(
      '--trust <SIGNER_PUBKEY_FILE>',
      'public key of a producer whose signatures to accept (repeat for several; DBCRATE_TRUST: a comma- or colon-separated list)',
      collect,
    )
    .option(
      '--allow-unsigned',
      'also accept objects without a signature (archives made before signing); they can be forged',
    );
}
