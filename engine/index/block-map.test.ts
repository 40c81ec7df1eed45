import { AssertionError } from 'node:assert';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { EngineError } from '../errors.ts';
import {
  BlockMap,
  CHUNK_BLOCKS,
  DENSE_MIN_ENTRIES,
  LBA_LIMIT,
  SPARSE_MAX_ENTRIES,
  UNMAPPED,
  ZERO_MARK,
} from './block-map.ts';

const GROUP_BLOCKS = 16 * CHUNK_BLOCKS; // the widest sparse leaf
const TOP = ZERO_MARK - 1; // the largest physical reference

/** Maps count blocks from lba, stride apart, to odd values: never physically contiguous. */
function scatter(map: BlockMap, lba: number, count: number, stride = 1, seed = 1): void {
  for (let i = 0; i < count; i++) map.set(lba + i * stride, 2 * (seed + i) + 1);
}

function entries(map: BlockMap, from = 0, to = LBA_LIMIT): [number, number][] {
  const out: [number, number][] = [];
  map.forEach(from, to, (lba, value) => out.push([lba, value]));
  return out;
}

/** Recomputes the trailing crc32 so a structural corruption reaches the structural checks. */
function reseal(image: Buffer): Buffer {
  image.writeUInt32LE(crc32(image.subarray(0, image.length - 4)), image.length - 4);
  return image;
}

function expectCorrupt(image: Buffer): void {
  let error: unknown;
  try {
    BlockMap.deserialize(image);
  } catch (err) {
    error = err;
  }
  expect(error).toBeInstanceOf(EngineError);
  expect((error as EngineError).code).toBe('CORRUPTION');
}

describe('get and set', () => {
  it('reads holes as UNMAPPED in an empty map', () => {
    const map = new BlockMap();
    expect([map.get(0), map.get(LBA_LIMIT - 1), map.mappedCount, map.nextMapped(0)]).toEqual([UNMAPPED, UNMAPPED, 0, -1]);
    map.verify();
  });

  it('stores ZERO_MARK like any other value', () => {
    const map = new BlockMap();
    map.set(7, ZERO_MARK);
    expect([map.get(7), map.mappedCount]).toEqual([ZERO_MARK, 1]);
  });

  it('overwrites without changing the count, and UNMAPPED removes', () => {
    const map = new BlockMap();
    map.set(7, 1);
    map.set(7, 2);
    expect([map.get(7), map.mappedCount]).toEqual([2, 1]);
    map.set(7, UNMAPPED);
    expect([map.get(7), map.mappedCount]).toEqual([UNMAPPED, 0]);
    map.set(8, UNMAPPED);
    expect(map.mappedCount).toBe(0);
  });

  it('frees every directory once the last block is removed', () => {
    const map = new BlockMap();
    const empty = map.memoryBytes();
    map.set(2 ** 39, 1);
    expect(map.stats().dirs).toBe(1);
    map.set(2 ** 39, UNMAPPED);
    expect([map.stats().dirs, map.memoryBytes()]).toEqual([0, empty]);
    map.verify();
  });

  it('keeps the blocks on both sides of a chunk boundary apart', () => {
    const map = new BlockMap();
    map.set(CHUNK_BLOCKS - 1, 11);
    map.set(CHUNK_BLOCKS, 12);
    expect([map.get(CHUNK_BLOCKS - 2), map.get(CHUNK_BLOCKS - 1), map.get(CHUNK_BLOCKS), map.get(CHUNK_BLOCKS + 1)]).toEqual([
      0, 11, 12, 0,
    ]);
    map.fill(CHUNK_BLOCKS - 1, 2, UNMAPPED);
    expect(map.mappedCount).toBe(0);
  });

  it('puts the two sides of a 16-chunk group boundary in different leaves', () => {
    const map = new BlockMap();
    map.set(GROUP_BLOCKS - 1, 1);
    map.set(GROUP_BLOCKS, 2);
    expect(map.inspect(GROUP_BLOCKS - 1)).toEqual({ kind: 'sparse', firstLba: 0, spanBlocks: GROUP_BLOCKS, count: 1 });
    expect(map.inspect(GROUP_BLOCKS)?.firstLba).toBe(GROUP_BLOCKS);
    map.verify();
  });

  it('works at the top of the LBA space', () => {
    const map = new BlockMap();
    map.set(LBA_LIMIT - 1, 9);
    map.setRun(LBA_LIMIT - CHUNK_BLOCKS - 2, 2, 100);
    expect([map.get(LBA_LIMIT - 1), map.get(LBA_LIMIT - CHUNK_BLOCKS - 1), map.nextMapped(0)]).toEqual([
      9,
      101,
      LBA_LIMIT - CHUNK_BLOCKS - 2,
    ]);
    expect(entries(map, LBA_LIMIT - 2, LBA_LIMIT)).toEqual([[LBA_LIMIT - 1, 9]]);
    map.setRun(LBA_LIMIT - CHUNK_BLOCKS, CHUNK_BLOCKS, 1);
    expect([map.get(LBA_LIMIT - 1), map.inspect(LBA_LIMIT - 1)?.kind]).toEqual([CHUNK_BLOCKS, 'run']);
    map.fill(LBA_LIMIT - 3 * CHUNK_BLOCKS, 3 * CHUNK_BLOCKS, UNMAPPED);
    expect(map.mappedCount).toBe(0);
    map.verify();
  });

  it('rejects LBAs, ranges and values outside the contract', () => {
    const map = new BlockMap();
    expect(() => map.get(LBA_LIMIT)).toThrow(AssertionError);
    expect(() => map.set(-1, 1)).toThrow(AssertionError);
    expect(() => map.set(1.5, 1)).toThrow(AssertionError);
    expect(() => map.set(0, 2 ** 32)).toThrow(AssertionError);
    expect(() => map.fill(LBA_LIMIT - 1, 2, 1)).toThrow(AssertionError);
    expect(() => map.setRun(0, 1, ZERO_MARK)).toThrow(AssertionError);
    expect(() => map.setRun(0, 1, UNMAPPED)).toThrow(AssertionError);
    expect(() => map.setRun(0, 2, TOP)).toThrow(AssertionError); // the second value would be ZERO_MARK
    expect(() => map.run(0, 0)).toThrow(AssertionError);
    expect(map.mappedCount).toBe(0);
  });

  it('clear() empties the map', () => {
    const map = new BlockMap();
    const empty = map.memoryBytes();
    map.fill(0, 10 * CHUNK_BLOCKS, ZERO_MARK);
    map.clear();
    expect([map.mappedCount, map.get(5), map.memoryBytes()]).toEqual([0, UNMAPPED, empty]);
    map.verify();
  });
});

describe('leaf transitions', () => {
  it('starts a leaf 16 chunks wide when the neighbourhood is empty', () => {
    const map = new BlockMap();
    map.set(5 * CHUNK_BLOCKS + 3, 7);
    expect(map.inspect(5 * CHUNK_BLOCKS)).toEqual({ kind: 'sparse', firstLba: 0, spanBlocks: GROUP_BLOCKS, count: 1 });
  });

  it('splits a wide leaf into halves when it outgrows SPARSE_MAX_ENTRIES', () => {
    const map = new BlockMap();
    const stride = Math.floor(GROUP_BLOCKS / SPARSE_MAX_ENTRIES);
    scatter(map, 0, SPARSE_MAX_ENTRIES, stride);
    expect(map.inspect(0)?.spanBlocks).toBe(GROUP_BLOCKS);
    map.set(GROUP_BLOCKS - 1, 3);
    expect(map.inspect(0)?.spanBlocks).toBe(GROUP_BLOCKS / 2);
    expect(map.inspect(GROUP_BLOCKS - 1)).toEqual({ kind: 'sparse', firstLba: GROUP_BLOCKS / 2, spanBlocks: GROUP_BLOCKS / 2, count: expect.any(Number) });
    expect(map.mappedCount).toBe(SPARSE_MAX_ENTRIES + 1);
    map.verify();
  });

  it('turns a chunk dense past SPARSE_MAX_ENTRIES and sparse again below DENSE_MIN_ENTRIES', () => {
    const map = new BlockMap();
    const base = 3 * CHUNK_BLOCKS;
    scatter(map, base, SPARSE_MAX_ENTRIES);
    expect(map.inspect(base)?.kind).toBe('sparse');
    map.set(base + SPARSE_MAX_ENTRIES, 1);
    expect(map.inspect(base)).toEqual({ kind: 'dense', firstLba: base, spanBlocks: CHUNK_BLOCKS, count: SPARSE_MAX_ENTRIES + 1 });
    map.fill(base + DENSE_MIN_ENTRIES, CHUNK_BLOCKS - DENSE_MIN_ENTRIES, UNMAPPED);
    expect(map.inspect(base)).toEqual({ kind: 'dense', firstLba: base, spanBlocks: CHUNK_BLOCKS, count: DENSE_MIN_ENTRIES });
    map.set(base, UNMAPPED);
    expect(map.inspect(base)).toEqual({ kind: 'sparse', firstLba: base, spanBlocks: CHUNK_BLOCKS, count: DENSE_MIN_ENTRIES - 1 });
    map.verify();
  });

  it('merges a shrinking leaf back into a wide one', () => {
    const map = new BlockMap();
    const base = 3 * CHUNK_BLOCKS;
    scatter(map, base, SPARSE_MAX_ENTRIES + 1); // dense, and the group split down to single chunks
    map.fill(base + 100, CHUNK_BLOCKS - 100, UNMAPPED);
    expect(map.inspect(base)).toEqual({ kind: 'sparse', firstLba: 0, spanBlocks: GROUP_BLOCKS, count: 100 });
    map.verify();
  });

  it('makes a run leaf from a whole-chunk setRun and expands it to dense on a partial write', () => {
    const map = new BlockMap();
    map.setRun(CHUNK_BLOCKS, CHUNK_BLOCKS, 100);
    expect(map.inspect(CHUNK_BLOCKS)).toEqual({ kind: 'run', firstLba: CHUNK_BLOCKS, spanBlocks: CHUNK_BLOCKS, count: CHUNK_BLOCKS });
    map.set(CHUNK_BLOCKS + 7, 5);
    expect(map.inspect(CHUNK_BLOCKS)?.kind).toBe('dense');
    expect([map.get(CHUNK_BLOCKS + 6), map.get(CHUNK_BLOCKS + 7), map.get(2 * CHUNK_BLOCKS - 1)]).toEqual([106, 5, 100 + 4095]);
    map.verify();
  });

  it('keeps the last block when a trim covers all but one block of a run leaf', () => {
    const map = new BlockMap();
    map.setRun(0, CHUNK_BLOCKS, 1);
    map.fill(0, CHUNK_BLOCKS - 1, UNMAPPED);
    expect([map.mappedCount, map.get(CHUNK_BLOCKS - 1), map.inspect(0)?.kind]).toEqual([1, CHUNK_BLOCKS, 'sparse']);
    map.verify();
  });

  it('compacts a chunk written block by block with contiguous values into a run leaf', () => {
    const map = new BlockMap();
    for (let i = 0; i < CHUNK_BLOCKS; i++) map.set(i, 1000 + i);
    expect(map.inspect(0)?.kind).toBe('run');
    expect(map.memoryBytes()).toBeLessThan(20_000); // directories only
  });

  it('compacts a dense chunk rewritten front to back by contiguous batches', () => {
    const map = new BlockMap();
    scatter(map, 0, CHUNK_BLOCKS);
    expect(map.inspect(0)?.kind).toBe('dense');
    for (let lba = 0; lba < CHUNK_BLOCKS; lba += 256) map.setRun(lba, 256, 50_000 + lba);
    expect(map.inspect(0)?.kind).toBe('run');
    map.verify();
  });

  it('does not compact a full chunk whose values reach ZERO_MARK', () => {
    const map = new BlockMap();
    map.setRun(0, CHUNK_BLOCKS - 1, ZERO_MARK - CHUNK_BLOCKS);
    map.set(CHUNK_BLOCKS - 1, ZERO_MARK);
    expect([map.inspect(0)?.kind, map.run(0, CHUNK_BLOCKS)]).toEqual(['dense', CHUNK_BLOCKS - 1]);
    map.verify();
  });

  it('shares one leaf among zero-filled chunks', () => {
    const map = new BlockMap();
    map.fill(0, 1024 * CHUNK_BLOCKS, ZERO_MARK);
    expect(map.stats()).toEqual({ sparseLeaves: 0, denseLeaves: 0, runLeaves: 1024, dirs: 2 });
    expect(map.memoryBytes()).toBeLessThan(30_000); // two Dirs, a Mid and the top array
  });
});

describe('run()', () => {
  it('follows +1 values across chunk boundaries and leaf kinds', () => {
    const map = new BlockMap();
    map.setRun(4000, 8400, 10); // partial chunk 0, run leaves for chunks 1 and 2, partial chunk 3
    const kinds = [0, 1, 2, 3].map((c) => map.inspect(c * CHUNK_BLOCKS)?.kind);
    expect(kinds).toEqual(['sparse', 'run', 'run', 'sparse']);
    expect([map.run(4000, 1e9), map.runValue]).toEqual([8400, 10]);
    expect([map.run(4001, 100), map.runValue]).toEqual([100, 11]);
  });

  it('measures a hole up to the next mapped block', () => {
    const map = new BlockMap();
    map.setRun(0, 10, 5);
    map.set(50, 1);
    expect([map.run(0, 100), map.run(10, 100), map.runValue, map.run(10, 7)]).toEqual([10, 40, UNMAPPED, 7]);
  });

  it('measures a hole across empty directories without visiting them', () => {
    const map = new BlockMap();
    map.set(2 ** 35, 1);
    expect(map.run(0, LBA_LIMIT)).toBe(2 ** 35);
    expect(map.run(2 ** 35 + 1, LBA_LIMIT)).toBe(LBA_LIMIT - 2 ** 35 - 1);
  });

  it('stops where ZERO_MARK meets references and where values jump', () => {
    const map = new BlockMap();
    map.fill(0, 5, ZERO_MARK);
    map.setRun(5, 5, 100);
    map.setRun(10, 5, 106);
    expect([map.run(0, 100), map.runValue, map.run(5, 100), map.runValue, map.run(10, 100)]).toEqual([5, ZERO_MARK, 5, 100, 5]);
  });

  it('does not step from the largest reference into ZERO_MARK', () => {
    const map = new BlockMap();
    map.setRun(0, 2, TOP - 1);
    map.set(2, ZERO_MARK);
    expect([map.run(0, 10), map.run(2, 10), map.runValue]).toEqual([2, 1, ZERO_MARK]);
  });

  it('treats repeated references as runs of one, in partial and whole chunks', () => {
    const map = new BlockMap();
    map.fill(0, 10, 42);
    map.fill(CHUNK_BLOCKS, CHUNK_BLOCKS, 42);
    expect([map.run(0, 10), map.run(CHUNK_BLOCKS + 5, 100), map.inspect(CHUNK_BLOCKS)?.kind]).toEqual([1, 1, 'run']);
  });

  it('separates a step-0 run leaf from a +1 run leaf with the same first value', () => {
    const map = new BlockMap();
    map.fill(0, CHUNK_BLOCKS, 7);
    map.setRun(CHUNK_BLOCKS, CHUNK_BLOCKS, 7);
    expect([map.run(CHUNK_BLOCKS - 1, 100), map.run(CHUNK_BLOCKS, 1e6)]).toEqual([1, CHUNK_BLOCKS]);
    const copy = BlockMap.deserialize(map.serialize());
    expect(entries(copy)).toEqual(entries(map));
  });

  it('runs over zero-filled chunks', () => {
    const map = new BlockMap();
    map.fill(100, 3 * CHUNK_BLOCKS, ZERO_MARK);
    expect([map.run(100, LBA_LIMIT), map.run(99, LBA_LIMIT)]).toEqual([3 * CHUNK_BLOCKS, 1]);
  });

  it('never runs past the top of the LBA space', () => {
    const map = new BlockMap();
    expect(map.run(LBA_LIMIT - 3, 100)).toBe(3);
    map.fill(LBA_LIMIT - 3, 3, ZERO_MARK);
    expect(map.run(LBA_LIMIT - 3, 100)).toBe(3);
  });
});

describe('nextMapped() and forEach()', () => {
  it('skips empty chunks and directories', () => {
    const map = new BlockMap();
    map.set(3, 1);
    map.set(2 ** 39 + 5, 2);
    expect([map.nextMapped(0), map.nextMapped(4), map.nextMapped(2 ** 39 + 6), map.nextMapped(LBA_LIMIT)]).toEqual([
      3,
      2 ** 39 + 5,
      -1,
      -1,
    ]);
  });

  it('finds blocks in later chunks of a wide leaf and in dense holes', () => {
    const map = new BlockMap();
    map.set(9 * CHUNK_BLOCKS + 1, 1); // inside the 16-chunk leaf at 0
    scatter(map, GROUP_BLOCKS, CHUNK_BLOCKS); // dense
    map.fill(GROUP_BLOCKS + 10, 500, UNMAPPED);
    expect([map.nextMapped(1), map.nextMapped(GROUP_BLOCKS + 10)]).toEqual([9 * CHUNK_BLOCKS + 1, GROUP_BLOCKS + 510]);
  });

  it('visits [from, to) in order across sparse, dense and run leaves', () => {
    const map = new BlockMap();
    map.set(CHUNK_BLOCKS - 1, 5);
    map.setRun(CHUNK_BLOCKS, CHUNK_BLOCKS, 10);
    scatter(map, 2 * CHUNK_BLOCKS, SPARSE_MAX_ENTRIES + 1);
    const all = entries(map);
    expect(all.length).toBe(1 + CHUNK_BLOCKS + SPARSE_MAX_ENTRIES + 1);
    expect(all.every(([lba], i) => i === 0 || lba > all[i - 1]![0])).toBe(true);
    expect(entries(map, CHUNK_BLOCKS - 1, CHUNK_BLOCKS + 2)).toEqual([
      [CHUNK_BLOCKS - 1, 5],
      [CHUNK_BLOCKS, 10],
      [CHUNK_BLOCKS + 1, 11],
    ]);
    expect(entries(map, 5, 5)).toEqual([]);
  });

  it('refuses a callback that mutates the map', () => {
    const map = new BlockMap();
    map.set(1, 1);
    map.set(2, 2);
    expect(() => map.forEach(0, 10, (lba) => map.set(lba + 100, 1))).toThrow(AssertionError);
  });
});

describe('fill() over huge ranges', () => {
  it('trims 2^30 blocks by visiting only the occupied leaves', () => {
    const map = new BlockMap();
    map.set(10, 1);
    map.set(2 ** 29, 2);
    map.set(2 ** 30 - 1, 3);
    map.set(2 ** 30, 4); // just outside
    const steps = map.mutationSteps;
    map.fill(0, 2 ** 30, UNMAPPED);
    expect(map.mutationSteps - steps).toBeLessThanOrEqual(3);
    expect([map.mappedCount, map.get(2 ** 30)]).toEqual([1, 4]);
    map.verify();
  });

  it('trims the whole LBA space of an empty map in one step', () => {
    const map = new BlockMap();
    map.fill(0, LBA_LIMIT, UNMAPPED);
    expect(map.mutationSteps).toBe(1);
  });

  it('zero-fills 2^30 blocks with one step per chunk and no per-chunk memory', () => {
    const map = new BlockMap();
    map.fill(100, 2 ** 30, ZERO_MARK);
    expect(map.mutationSteps).toBe(2 ** 30 / CHUNK_BLOCKS + 1); // whole chunks plus the two partial ends
    expect(map.mappedCount).toBe(2 ** 30);
    expect([map.get(99), map.get(100), map.get(100 + 2 ** 30 - 1), map.get(100 + 2 ** 30)]).toEqual([0, ZERO_MARK, ZERO_MARK, 0]);
    expect(map.memoryBytes()).toBeLessThan(3 * 2 ** 20); // 513 Dirs of 4 KiB; no leaf per chunk
    map.fill(0, LBA_LIMIT, UNMAPPED);
    expect(map.mappedCount).toBe(0);
    map.verify();
  });

  it('maps a huge setRun as run leaves', () => {
    const map = new BlockMap();
    map.setRun(0, 2 ** 24, 1);
    expect([map.mappedCount, map.stats().runLeaves, map.run(0, LBA_LIMIT), map.get(2 ** 24 - 1)]).toEqual([
      2 ** 24,
      2 ** 12,
      2 ** 24,
      2 ** 24,
    ]);
  });
});

describe('serialize() and deserialize()', () => {
  function mixedMap(): BlockMap {
    const map = new BlockMap();
    map.set(5, 7);
    scatter(map, 7 * CHUNK_BLOCKS + 3, 300, 3); // wide sparse leaf
    scatter(map, GROUP_BLOCKS, CHUNK_BLOCKS - 10); // dense
    map.setRun(GROUP_BLOCKS + CHUNK_BLOCKS, 2 * CHUNK_BLOCKS, 100); // two run leaves, one record
    map.fill(4 * GROUP_BLOCKS, 5 * CHUNK_BLOCKS, ZERO_MARK);
    map.set(LBA_LIMIT - 1, TOP);
    return map;
  }

  it('writes the worked example of the module comment', () => {
    const map = new BlockMap();
    map.set(5, 7);
    map.setRun(CHUNK_BLOCKS, CHUNK_BLOCKS, 100);
    const image = map.serialize();
    const expected = Buffer.alloc(24 + 16 + 16 + 4);
    expected.write('BMAP', 0, 'latin1');
    expected.writeUInt16LE(1, 4);
    expected.writeBigUInt64LE(4097n, 8);
    expected.writeUInt32LE(2, 16);
    [0, 1, 1, 5].forEach((v, i) => (i === 0 ? expected.writeUInt32LE(v, 24) : expected.writeUInt16LE(v, 26 + 2 * i)));
    expected.writeUInt32LE(7, 36);
    expected.writeUInt32LE(1, 40);
    expected.writeUInt16LE(3, 44);
    expected.writeUInt16LE(1, 46);
    expected.writeUInt32LE(100, 48);
    expected.writeUInt32LE(1, 52);
    expect(image).toEqual(reseal(expected));
  });

  it('round-trips an empty map', () => {
    const image = new BlockMap().serialize();
    expect(image.length).toBe(28);
    expect(BlockMap.deserialize(image).mappedCount).toBe(0);
  });

  it('round-trips every leaf kind, and re-serializes to the same bytes', () => {
    const map = mixedMap();
    const image = map.serialize();
    const copy = BlockMap.deserialize(image);
    copy.verify();
    expect(copy.mappedCount).toBe(map.mappedCount);
    expect(entries(copy)).toEqual(entries(map));
    expect(copy.serialize()).toEqual(image);
  });

  it('stores a zero-filled 1 TiB in a few bytes', () => {
    const map = new BlockMap();
    map.fill(0, 2 ** 28, ZERO_MARK);
    const image = map.serialize();
    expect(image.length).toBe(24 + 2 * 16 + 4); // 65536 chunks = two run records of up to 65535
    expect(BlockMap.deserialize(image).run(0, LBA_LIMIT)).toBe(2 ** 28);
  });

  it('rejects every truncation', () => {
    const small = new BlockMap();
    small.set(5, 7);
    small.setRun(CHUNK_BLOCKS, CHUNK_BLOCKS, 100);
    const image = small.serialize();
    for (let length = 0; length < image.length; length++) expectCorrupt(image.subarray(0, length));
    const large = mixedMap().serialize();
    for (const length of [large.length >> 1, large.length - 5, large.length - 1]) expectCorrupt(large.subarray(0, length));
  });

  it('rejects any single flipped byte', () => {
    const map = new BlockMap();
    map.set(5, 7);
    map.setRun(CHUNK_BLOCKS, CHUNK_BLOCKS, 100);
    const image = map.serialize();
    for (let i = 0; i < image.length; i++) {
      const bad = Buffer.from(image);
      bad[i]! ^= 0x10;
      expect(() => BlockMap.deserialize(bad), `byte ${i}`).toThrow(EngineError);
    }
  });

  it('reports another version as UNSUPPORTED_FORMAT', () => {
    const image = new BlockMap().serialize();
    image.writeUInt16LE(2, 4);
    expect(() => BlockMap.deserialize(reseal(image))).toThrow(expect.objectContaining({ code: 'UNSUPPORTED_FORMAT' }));
  });

  describe('rejects well-sealed images that break the grammar', () => {
    /** One sparse record (offsets 5, 9 -> 7, 8) at chunk 0, then one run record at chunk 1. */
    function sample(): Buffer {
      const map = new BlockMap();
      map.set(5, 7);
      map.set(9, 8);
      map.setRun(CHUNK_BLOCKS, CHUNK_BLOCKS, 100);
      return map.serialize();
    }
    const SPARSE = 24; // record header; offsets at +8, values at +12
    const RUN = SPARSE + 8 + 4 + 8; // record header; first at +8, step at +12
    const cases: [string, (image: Buffer) => void][] = [
      ['offsets out of order', (b) => b.writeUInt16LE(9, SPARSE + 8)],
      ['an offset past the chunk', (b) => b.writeUInt16LE(CHUNK_BLOCKS, SPARSE + 10)],
      ['a stored hole', (b) => b.writeUInt32LE(0, SPARSE + 12)],
      ['an empty sparse record', (b) => b.writeUInt16LE(0, SPARSE + 6)],
      ['an unknown kind', (b) => b.writeUInt16LE(9, SPARSE + 4)],
      ['chunks out of order', (b) => b.writeUInt32LE(0, RUN)],
      ['a run step of 2', (b) => b.writeUInt32LE(2, RUN + 12)],
      ['a run reaching ZERO_MARK', (b) => b.writeUInt32LE(ZERO_MARK - CHUNK_BLOCKS + 1, RUN + 8)],
      ['a run past the LBA space', (b) => (b.writeUInt32LE(2 ** 28 - 1, RUN), b.writeUInt16LE(2, RUN + 6))],
      ['a run of zero chunks', (b) => b.writeUInt16LE(0, RUN + 6)],
      ['a wrong mapped count', (b) => b.writeBigUInt64LE(4097n, 8)],
      ['a missing record', (b) => b.writeUInt32LE(3, 16)],
      ['a reserved header field', (b) => b.writeUInt32LE(1, 20)],
    ];
    for (const [name, damage] of cases) {
      it(name, () => {
        const image = sample();
        damage(image);
        expectCorrupt(reseal(image));
      });
    }

    it('bytes after the last record', () => {
      const image = sample();
      expectCorrupt(reseal(Buffer.concat([image.subarray(0, image.length - 4), Buffer.alloc(8)])));
    });

    it('an all-hole dense record', () => {
      const image = Buffer.alloc(24 + 8 + 4 * CHUNK_BLOCKS + 4);
      image.writeUInt32LE(0x50414d42, 0);
      image.writeUInt16LE(1, 4);
      image.writeUInt32LE(1, 16);
      image.writeUInt16LE(2, 24 + 4);
      expectCorrupt(reseal(image));
    });
  });
});

/** mulberry32: deterministic pseudo-random numbers in [0, 1). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function shuffle(values: Float64Array, seed: number): void {
  const random = prng(seed);
  for (let i = values.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = values[i]!;
    values[i] = values[j]!;
    values[j] = t;
  }
}

/** Writes lbas in order with odd values, so no two neighbours are physically contiguous. */
function writeScattered(lbas: Float64Array): BlockMap {
  const map = new BlockMap();
  for (let i = 0; i < lbas.length; i++) map.set(lbas[i]!, 2 * i + 1);
  return map;
}

function bytesPerBlock(name: string, map: BlockMap): number {
  const figure = map.memoryBytes() / map.mappedCount;
  console.log(`block map memory, ${name}: ${figure.toFixed(2)} bytes per mapped block (${map.mappedCount} mapped)`);
  return figure;
}

describe('memory per mapped block (DESIGN P8: <= 8 for random writes)', () => {
  it('random: 1,000,000 distinct blocks of a 16 GiB volume', () => {
    const span = 16 * 2 ** 18;
    const lbas = new Float64Array(span);
    for (let i = 0; i < span; i++) lbas[i] = i;
    shuffle(lbas, 1);
    const map = writeScattered(lbas.subarray(0, 1_000_000));
    expect(map.mappedCount).toBe(1_000_000);
    expect(bytesPerBlock('random 1M of 16 GiB', map)).toBeLessThanOrEqual(8);
  });

  it('sequential: 1,000,000 blocks in contiguous batches', () => {
    const map = new BlockMap();
    for (let lba = 0; lba < 1_000_000; lba += 256) map.setRun(lba, Math.min(256, 1_000_000 - lba), 1 + lba);
    expect(bytesPerBlock('sequential 1M', map)).toBeLessThan(0.1);
  });

  it('sparse: 1% of a 1 TiB volume, scattered, written in random order', () => {
    const random = prng(2);
    const lbas: number[] = [];
    for (let lba = Math.floor(random() * 199); lba < 2 ** 28; lba += 1 + Math.floor(random() * 199)) lbas.push(lba);
    const order = Float64Array.from(lbas);
    shuffle(order, 3);
    expect(bytesPerBlock('1% of 1 TiB', writeScattered(order))).toBeLessThanOrEqual(8);
  });

  it('extreme: one block per 4096-block chunk of 1 TiB (over P8; see the module comment)', () => {
    const random = prng(4);
    const lbas = new Float64Array(2 ** 16);
    for (let c = 0; c < lbas.length; c++) lbas[c] = c * CHUNK_BLOCKS + Math.floor(random() * CHUNK_BLOCKS);
    shuffle(lbas, 5);
    expect(bytesPerBlock('1 per chunk of 1 TiB', writeScattered(lbas))).toBeLessThan(64);
  });
});
