import { PassThrough, Readable, Transform } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import type { Storage } from '@dbcrate/storage';
import type { ToolRun } from './child-process.stream';
import { storeToolOutput } from './store-tool-output';

/** A stage that holds everything back and writes it all when its input ends (as an encryptor's flush). */
function flushesAtEnd(bytes: number): Transform {
  return new Transform({
    readableHighWaterMark: 1024,
    transform(_c, _e, cb) {
      cb();
    },
    flush(cb) {
      for (let i = 0; i < bytes / 1024; i++) this.push(Buffer.alloc(1024));
      cb();
    },
  });
}

describe('storeToolOutput', () => {
  it('a put that gives up after the tool has ended fails the run instead of leaving it waiting', async () => {
    const tool = {
      stdout: Readable.from([Buffer.from('all of the output')]),
      exited: Promise.resolve(),
      kill: () => undefined,
      stderrTail: () => '',
    } as unknown as ToolRun;
    const deleted: string[] = [];
    const storage = {
      // Reads nothing and fails once the source has ended: the stage's flush has no reader.
      put: async () => {
        await new Promise((r) => setTimeout(r, 50));
        throw new DbcrateError(ErrorCodes.STORAGE_IO, 'cannot write "k": injected failure');
      },
      delete: async (k: string) => {
        deleted.push(k);
      },
    } as unknown as Storage;
    const stage = flushesAtEnd(4 * 1024 * 1024);
    const run = storeToolOutput({
      tool,
      stages: [new PassThrough(), stage],
      storage,
      key: 'k',
      what: 'backup',
    });
    await expect(run).rejects.toMatchObject({ code: ErrorCodes.STORAGE_IO });
    expect(stage.destroyed).toBe(true);
    expect(deleted).toEqual([]);
  });
});
