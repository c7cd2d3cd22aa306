import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { z } from 'zod';
import { resolveSettings } from '@dbcrate/config';
import { generateKeyPair, generateSigningKey } from '@dbcrate/crypto';
import { contextFor } from '../cli.context';
import { passphraseFrom } from '@dbcrate/crypto';
import { writeKeyFiles } from '../key-files';

const schema = z.object({
  name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'use letters, digits, . _ -'),
  out: z.string().min(1),
  email: z.string().optional(),
  passphraseEnv: z.string().optional(),
});

export function keysCommand(): Command {
  const keys = new Command('keys').description('manage the organisation OpenPGP key pair');
  keys
    .command('generate')
    .description('generate an OpenPGP key pair (v4, Curve25519) that stock gpg can use')
    .option('--name <ORG>', 'key name; files are DIR/ORG.pub.asc and DIR/ORG.key.asc')
    .option('--out <DIR>', 'directory to write the key files into')
    .option('--email <EMAIL>', 'e-mail address for the key user id')
    .option(
      '--passphrase-env <VAR>',
      'protect the private key with the passphrase in environment variable VAR',
    )
    .action(async (_o, cmd: Command) => {
      const ctx = contextFor(cmd);
      const s = resolveSettings(schema, { flags: cmd.opts(), file: ctx.file });
      const passphrase = passphraseFrom(s.passphraseEnv);
      await mkdir(s.out, { recursive: true });
      const pair = await generateKeyPair({ name: s.name, email: s.email, passphrase });
      const pub = join(s.out, `${s.name}.pub.asc`);
      const priv = join(s.out, `${s.name}.key.asc`);
      await writeKeyFiles([
        { path: pub, data: pair.publicArmored, mode: 0o644 },
        { path: priv, data: pair.privateArmored, mode: 0o600 },
      ]);
      process.stdout.write(`fingerprint ${pair.fingerprint}\npublic key  ${pub}\nprivate key ${priv}\n`);
      if (!passphrase) {
        process.stderr.write(
          'dbcrate: warning: the private key is not passphrase-protected; keep it offline, or regenerate with --passphrase-env VAR\n',
        );
      }
      process.stderr.write(
        'dbcrate: keep the private key away from database hosts: backups only need the public key\n',
      );
    });
  keys
    .command('generate-signing')
    .description(
      "generate this host's signing key (v4 Ed25519): backups it makes are signed with it, readers --trust its public key",
    )
    .option('--name <HOST>', 'key name; files are DIR/HOST.sign.pub.asc and DIR/HOST.sign.key.asc (0600)')
    .option('--out <DIR>', 'directory to write the key files into')
    .option('--email <EMAIL>', 'e-mail address for the key user id')
    .option(
      '--passphrase-env <VAR>',
      'protect the signing key with the passphrase in environment variable VAR',
    )
    .action(async (_o, cmd: Command) => {
      const ctx = contextFor(cmd);
      const s = resolveSettings(schema, { flags: cmd.opts(), file: ctx.file });
      const passphrase = passphraseFrom(s.passphraseEnv);
      await mkdir(s.out, { recursive: true });
      const pair = await generateSigningKey({ name: s.name, email: s.email, passphrase });
      const pub = join(s.out, `${s.name}.sign.pub.asc`);
      const priv = join(s.out, `${s.name}.sign.key.asc`);
      await writeKeyFiles([
        { path: pub, data: pair.publicArmored, mode: 0o644 },
        { path: priv, data: pair.privateArmored, mode: 0o600 },
      ]);
      process.stdout.write(`fingerprint ${pair.fingerprint}\npublic key  ${pub}\nsigning key ${priv}\n`);
      process.stderr.write(
        'dbcrate: the signing key stays on this host (--signing-key); give the public key to every reader (--trust)\n',
      );
    });
  return keys;
}
