import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import { z } from 'zod';
import { resolveSettings } from '@dbcrate/config';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { generateKeyPair } from '@dbcrate/crypto';
import { contextFor } from '../cli.context';
import { passphraseFrom } from '../key-files';

const schema = z.object({
  name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'use letters, digits, . _ -'),
  out: z.string().min(1),
  email: z.string().optional(),
  passphraseEnv: z.string().optional(),
});

async function writeNew(path: string, data: string, mode: number): Promise<void> {
  try {
    await writeFile(path, data, { mode, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new DbcrateError(ErrorCodes.USAGE, `${path} already exists; refusing to overwrite a key`, {
        hint: 'choose another --name or --out directory',
      });
    }
    throw new DbcrateError(ErrorCodes.CONFIG, `cannot write ${path}: ${(e as Error).message}`);
  }
}

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
      await writeNew(pub, pair.publicArmored, 0o644);
      await writeNew(priv, pair.privateArmored, 0o600);
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
  return keys;
}
