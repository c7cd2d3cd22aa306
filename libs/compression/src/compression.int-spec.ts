/**
 * Our zstd against the real `zstd` CLI, both directions, byte-exact (sha256): a customer
 * must be able to `zstd -d` what we wrote, and we must read what `zstd` writes.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { Writable, type Duplex } from 'node:stream';
import type { Codec } from './codec';
import { getCodec } from './compression.registry';
import { chunked, sampleData, sha256, through } from './compression.fixture';

/** Run `zstd args`, stream `input` in, hash and collect stdout. */
async function zstdCli(args: string[], input: Buffer): Promise<{ out: Buffer; sha: string }> {
  const child = spawn('zstd', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const parts: Buffer[] = [];
  const hash = createHash('sha256');
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  });
  await Promise.all([
    pipeline(chunked(input), child.stdin),
    pipeline(
      child.stdout,
      new Writable({
        write(chunk: Buffer, _e, cb) {
          parts.push(chunk);
          hash.update(chunk);
          cb();
        },
      }),
    ),
  ]);
  const code = await exited;
  if (code !== 0) throw new Error(`zstd ${args.join(' ')} exited ${code}: ${stderr}`);
  return { out: Buffer.concat(parts), sha: hash.digest('hex') };
}

jest.setTimeout(300_000);

const data = sampleData(24 * 1024 * 1024, 3);
const dataSha = sha256(data);

describe.each([
  ['native', getCodec('zstd', { implementation: 'native' })],
  ['wasm', getCodec('zstd', { implementation: 'wasm' })],
])('%s codec against the zstd CLI', (_label, codec: Codec) => {
  const ours = (opts?: Parameters<Codec['compressor']>[0]): Duplex => codec.compressor(opts);

  it.each([
    ['level 3 (default)', {}],
    ['level 1, 1 thread', { level: 1, threads: 1 }],
    ['level 9, no threads', { level: 9, threads: 0 }],
  ])('zstd -d reads our output: %s', async (_l, opts) => {
    const z = await through(data, ours(opts));
    expect((await zstdCli(['-d', '-c'], z)).sha).toBe(dataSha);
    // --test also checks the content checksum when there is one.
    await zstdCli(['-t', '-q'], z);
  });

  it('zstd -d reads our output for 0 bytes and for several frames concatenated', async () => {
    const empty = await through(Buffer.alloc(0), ours());
    expect((await zstdCli(['-d', '-c'], empty)).out.length).toBe(0);
    const a = await through(data.subarray(0, 1000), ours());
    const b = await through(data.subarray(1000, 5000000), ours());
    expect((await zstdCli(['-d', '-c'], Buffer.concat([a, b]))).sha).toBe(sha256(data.subarray(0, 5000000)));
  });

  it.each([
    ['-3', ['-3', '-c']],
    ['-19 (large window)', ['-19', '-c']],
    ['-T2 multi-threaded', ['-3', '-T2', '-c']],
    ['--no-check', ['-3', '--no-check', '-c']],
  ])('we read what zstd %s writes', async (_l, args) => {
    const input = args[0] === '-19' ? data.subarray(0, 2 * 1024 * 1024) : data;
    const z = (await zstdCli(args, input)).out;
    expect(sha256(await through(z, codec.decompressor()))).toBe(sha256(input));
  });

  it('zstd --long=27 (128 MiB window): native reads it, wasm says it cannot', async () => {
    const z = (await zstdCli(['-3', '--long=27', '-c'], data)).out;
    if (codec.implementation === 'zstd-napi') {
      expect(sha256(await through(z, codec.decompressor()))).toBe(dataSha);
    } else {
      await expect(through(z, codec.decompressor())).rejects.toMatchObject({
        code: 'E_CODEC',
        message: expect.stringMatching(/ran out of memory/),
      });
      // ...and the WebAssembly instance recovers for the next stream.
      const small = data.subarray(0, 100000);
      expect(sha256(await through(await through(small, codec.compressor()), codec.decompressor()))).toBe(
        sha256(small),
      );
    }
  });

  it('we read several zstd CLI frames concatenated (like `cat a.zst b.zst`)', async () => {
    const a = (await zstdCli(['-c', '-1'], data.subarray(0, 3000000))).out;
    const b = (await zstdCli(['-c', '-5'], data.subarray(3000000))).out;
    expect(sha256(await through(Buffer.concat([a, b]), codec.decompressor()))).toBe(dataSha);
  });

  it('we reject what zstd would reject: a truncated CLI-made file', async () => {
    const z = (await zstdCli(['-c'], data)).out;
    await expect(through(z.subarray(0, z.length - 10), codec.decompressor())).rejects.toMatchObject({
      code: 'E_INTEGRITY',
    });
  });
});
