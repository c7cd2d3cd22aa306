#!/usr/bin/env node
// One dbcrate pipeline stage in isolation, file in → /dev/null out, using the built libs
// (dist/). bench/run.mjs runs each stage in its own process next to the CLI peer doing the
// same work (zstd, gpg), to show which stage limits a backup or a restore.
//
//   node bench/stages.mjs <stage> <input> [key file]
//   stages: read | sha256 | zstd | openpgp | chain | unzstd | decrypt | restore-chain
//   DBCRATE_OPENPGP_IMPLEMENTATION=openpgpjs (or native, the default) picks who does openpgp/decrypt.
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const DIST = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'libs');
const lib = (name) => require(join(DIST, name, 'src', 'index.js'));

const [stage, input, keyFile] = process.argv.slice(2);
if (!stage || !input) {
  console.error('usage: node bench/stages.mjs <stage> <input> [key file]');
  process.exit(2);
}

const devNull = () =>
  new Writable({
    highWaterMark: 1024 * 1024,
    write(_c, _e, cb) {
      cb();
    },
  });

const codec = () => lib('compression').getCodec('zstd', { implementation: 'auto' });
const cipher = () => lib('crypto').getCipher('openpgp');
const recipients = async () => [await lib('crypto').loadRecipientKey(await readFile(keyFile, 'utf8'))];
const decryptionKeys = async () => [
  await lib('crypto').loadDecryptionKey(await readFile(keyFile, 'utf8'), undefined),
];
const meter = () => new (lib('core').MeterStream)();

const stages = {
  read: async () => [],
  sha256: async () => [meter()],
  zstd: async () => [codec().compressor({ level: 3, threads: 2 })],
  openpgp: async () => [cipher().encryptor(await recipients())],
  chain: async () => [
    meter(),
    codec().compressor({ level: 3, threads: 2 }),
    cipher().encryptor(await recipients()),
    meter(),
  ],
  unzstd: async () => [codec().decompressor()],
  decrypt: async () => [cipher().decryptor(await decryptionKeys())],
  'restore-chain': async () => [meter(), cipher().decryptor(await decryptionKeys()), codec().decompressor()],
};

if (!stages[stage]) {
  console.error(`unknown stage ${stage}; one of ${Object.keys(stages).join(', ')}`);
  process.exit(2);
}
const middle = await stages[stage]();
const t0 = performance.now();
// 64 KiB reads, the size of the chunks pg_dump's stdout pipe delivers.
await pipeline(createReadStream(input, { highWaterMark: 64 * 1024 }), ...middle, devNull());
process.stdout.write(`${stage} ${((performance.now() - t0) / 1000).toFixed(3)}\n`);
