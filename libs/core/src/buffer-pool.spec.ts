import { BufferPool } from './streams';

describe('BufferPool', () => {
  it('recycles a buffer given back as it was lent', () => {
    const pool = new BufferPool(1024);
    const a = pool.take();
    pool.giveBack(pool.lend(a.subarray(0, 100)));
    expect(pool.take().buffer).toBe(a.buffer);
  });

  it('never recycles a piece of a lent buffer, a joined copy, or what it never lent', () => {
    const pool = new BufferPool(1024);
    const a = pool.take();
    const view = pool.lend(a.subarray(0, 600));
    pool.giveBack(view.subarray(0, 300)); // split: the other half may still be pending
    pool.giveBack(view.subarray(300));
    pool.giveBack(Buffer.concat([view])); // joined: another buffer
    pool.giveBack(Buffer.alloc(1024));
    expect(pool.take().buffer).not.toBe(a.buffer);
    // the whole view, once: recycled; a second give-back of it is ignored
    pool.giveBack(view);
    pool.giveBack(view);
    const b = pool.take();
    expect(b.buffer).toBe(a.buffer);
    expect(pool.take().buffer).not.toBe(a.buffer);
  });

  it('keeps at most `keep` free buffers', () => {
    const pool = new BufferPool(64, 2);
    const taken = [pool.take(), pool.take(), pool.take()];
    for (const t of taken) pool.giveBack(pool.lend(t.subarray(0, 64)));
    const again = [pool.take(), pool.take(), pool.take()].map((b) => b.buffer);
    expect(again.filter((b) => taken.some((t) => t.buffer === b))).toHaveLength(2);
  });
});
