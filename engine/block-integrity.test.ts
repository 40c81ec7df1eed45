/**
 * Per-block checksums on the read path: a damaged block on disk is an error (CORRUPTION), never
 * data, wherever it sits (replayed tail or long before the checkpoint), and the cleaner does not
 * launder a damaged live block into a fresh copy with a valid checksum.
 */
import { describe, expect, it } from 'vitest';
import { EngineError } from './errors.ts';
import { silentLogger } from './logger.ts';
import { segmentFileName } from './log/format.ts';
import { Pool } from './pool.ts';
import { MemoryStorage } from './storage/memory-storage.ts';

const SEGMENT = 69 * 4096;
const opts = { logger: silentLogger, segmentBytes: SEGMENT, cacheBytes: 0 };

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 13 + seed * 101 + (i >> 12)) & 0xff;
  return b;
}

async function readCode(pool: Pool, name: string, offset: number, length: number): Promise<string> {
  const dev = pool.openExport(name);
  try {
    await dev.read(offset, Buffer.alloc(length));
    return 'ok';
  } catch (err) {
    if (err instanceof EngineError) return err.code;
    throw err;
  } finally {
    dev.close();
  }
}

/** Flips one byte of the first data block of segment 1 (right after the first record's header). */
async function damage(storage: MemoryStorage, blockInSegment: number): Promise<void> {
  const file = await storage.open(segmentFileName(1), { create: false });
  const b = Buffer.alloc(1);
  await file.read(b, 0, 1, blockInSegment * 4096 + 100);
  b[0] = b[0]! ^ 0x5a;
  await file.write(b, 0, 1, blockInSegment * 4096 + 100);
  await file.datasync();
}

describe('block checksums', () => {
  it('a damaged block behind the checkpoint fails its read with CORRUPTION; its neighbours read fine', async () => {
    const storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, opts);
    await pool.createVolume('a', 1 << 20);
    const dev = pool.openExport('a');
    await dev.write(0, pattern(64 * 1024, 1), false);
    dev.close();
    await pool.close(); // checkpoint: nothing is replayed at the next open
    await damage(storage, 1 + 3); // header at block 0, data from block 1: lba 3
    pool = await Pool.openWithStorage(storage, opts);
    expect(await readCode(pool, 'a', 3 * 4096, 4096)).toBe('CORRUPTION');
    expect(await readCode(pool, 'a', 3 * 4096 + 512, 512)).toBe('CORRUPTION'); // partial reads check the whole block
    expect(await readCode(pool, 'a', 0, 3 * 4096)).toBe('ok');
    expect(await readCode(pool, 'a', 4 * 4096, 60 * 1024)).toBe('ok');
    expect(pool.stats().checksumFailures).toBe(2);
    await pool.close();
  });

  it('the cleaner leaves a segment with a damaged live block alone and keeps reporting it', async () => {
    const storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, opts);
    await pool.createVolume('a', 1 << 20);
    const dev = pool.openExport('a');
    await dev.write(0, pattern(200 * 1024, 2), false); // fills most of segment 1
    await dev.write(8192, pattern(150 * 1024, 3), false); // overwrites most of it: segment 1 is mostly dead
    dev.close();
    await pool.close();
    await damage(storage, 1); // lba 0: still live in segment 1
    pool = await Pool.openWithStorage(storage, opts);
    await pool.clean();
    expect(pool.stats().segmentsDamaged).toBe(1);
    expect(await readCode(pool, 'a', 0, 4096)).toBe('CORRUPTION');
    expect(await readCode(pool, 'a', 4096, 4096)).toBe('ok');
    await pool.close();
  });

  it('a block shared by clones is read from disk once, then served from the cache', async () => {
    const storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, opts);
    await pool.createVolume('gold', 1 << 20);
    const dev = pool.openExport('gold');
    await dev.write(0, pattern(128 * 1024, 4), false);
    dev.close();
    await pool.createSnapshot('gold', 'snap');
    for (let i = 0; i < 4; i++) await pool.cloneVolume('snap', `c${i}`);
    await pool.close(); // everything on disk: reads go to the segments, not to batches
    pool = await Pool.openWithStorage(storage, { ...opts, cacheBytes: 1 << 20 });
    for (let i = 0; i < 4; i++) {
      const c = pool.openExport(`c${i}`);
      const buf = Buffer.alloc(128 * 1024);
      await c.read(0, buf);
      expect(buf.equals(pattern(128 * 1024, 4))).toBe(true);
      c.close();
    }
    const s = pool.stats();
    expect(s.cacheMisses).toBe(32);
    expect(s.cacheHits).toBe(3 * 32);
    await pool.close();
  });
});
