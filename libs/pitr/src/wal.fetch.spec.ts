import { followingSegments, segmentSizeOfLength } from './wal.fetch';

describe('prefetch with the archive’s segment size', () => {
  it('16 MiB segments: 256 per log file', () => {
    expect(followingSegments('0000000100000000000000FF', 2)).toEqual([
      '000000010000000100000000',
      '000000010000000100000001',
    ]);
  });

  it('1 MiB segments (initdb --wal-segsize=1): 4096 per log file, not 256', () => {
    expect(followingSegments('0000000100000000000000FF', 2, 1 << 20)).toEqual([
      '000000010000000000000100',
      '000000010000000000000101',
    ]);
    expect(followingSegments('000000010000000000000FFF', 1, 1 << 20)).toEqual(['000000010000000100000000']);
  });

  it('takes the segment size from a restored segment’s length, when it is a valid one', () => {
    expect(segmentSizeOfLength(16 * 1024 * 1024)).toBe(16 * 1024 * 1024);
    expect(segmentSizeOfLength(1 << 20)).toBe(1 << 20);
    expect(segmentSizeOfLength(41)).toBeUndefined();
    expect(segmentSizeOfLength(3 << 20)).toBeUndefined();
  });
});
