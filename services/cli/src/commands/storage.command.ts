import { Command } from 'commander';
import { openStorage, probeStorage } from '@dbcrate/storage';
import { contextFor } from '../cli.context';

export function storageCommand(): Command {
  const storage = new Command('storage').description('storage destinations');
  storage
    .command('check')
    .description('probe a destination end to end: list, write, read back, delete')
    .argument('<DEST_URL>', 'file:///abs/path | s3://bucket/prefix?… | sftp://user@host:port/path')
    .action(async (url: string, _o, cmd: Command) => {
      contextFor(cmd);
      const s = await openStorage(url);
      try {
        const result = await probeStorage(s);
        for (const step of result.steps) process.stdout.write(`${step.name.padEnd(6)} ok  ${step.ms} ms\n`);
        process.stdout.write(`${s.displayUrl} is usable\n`);
      } finally {
        await s.close();
      }
    });
  return storage;
}
