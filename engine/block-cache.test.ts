import { describe, expect, it } from 'vitest';
import { BlockCache } from './block-cache.ts';

const block = (fill: number) => Buffer.alloc(4096, fill);

describe('BlockCache', () => {
  it('serves inserted blocks, any byte range of them', () => {
    const cache = new BlockCache(4 * 4096);
    cache.insert(10, block(7), 0);
    const out = Buffer.alloc(100);
    expect(cache.read(10, 4000, out, 4, 96)).toBe(true);
    expect(out.subarray(4).every((b) => b === 7)).toBe(true);
    expect(cache.read(11, 0, out, 0, 1)).toBe(false);
    expect(cache.hits).toBe(1);
  });

  it('evicts a block not used since the hand last passed, keeping a recently read one', () => {
    const cache = new BlockCache(2 * 4096);
    cache.insert(1, block(1), 0);
    cache.insert(2, block(2), 0);
    cache.read(1, 0, Buffer.alloc(1), 0, 1); // second chance for 1
    cache.insert(3, block(3), 0);
    expect(cache.has(1)).toBe(true);
    expect(cache.has(2)).toBe(false);
    expect(cache.has(3)).toBe(true);
    expect(cache.sizeBlocks).toBe(2);
  });

  it('drops the blocks of a deleted segment and nothing else', () => {
    const cache = new BlockCache(8 * 4096);
    for (const pbn of [100, 101, 199, 200, 300]) cache.insert(pbn, block(pbn & 0xff), 0);
    cache.dropRange(100, 100);
    expect([100, 101, 199, 200, 300].map((p) => cache.has(p))).toEqual([false, false, false, true, true]);
    cache.insert(100, block(9), 0); // the number is reused with new content
    const out = Buffer.alloc(1);
    cache.read(100, 0, out, 0, 1);
    expect(out[0]).toBe(9);
  });

  it('copies a run of blocks cached in consecutive slots at once', () => {
    const cache = new BlockCache(8 * 4096);
    for (let pbn = 50; pbn < 54; pbn++) cache.insert(pbn, block(pbn), 0);
    cache.insert(70, block(70), 0);
    expect(cache.cachedRun(50, 10)).toBe(4);
    expect(cache.cachedRun(52, 10)).toBe(2);
    expect(cache.cachedRun(51, 2)).toBe(2);
    expect(cache.cachedRun(60, 3)).toBe(0);
    const out = Buffer.alloc(3 * 4096 - 100);
    cache.readRun(51, 3, 100, out, 0, out.length);
    expect(out[0]).toBe(51);
    expect(out[4096 - 100]).toBe(52);
    expect(out.at(-1)).toBe(53);
    expect(cache.hits).toBe(3);
  });

  it('a zero-sized cache stores nothing', () => {
    const cache = new BlockCache(0);
    expect(cache.enabled).toBe(false);
    cache.insert(1, block(1), 0);
    expect(cache.has(1)).toBe(false);
  });
});
