import { describe, expect, it } from 'vitest';
import { silentLogger } from './logger.ts';
import { Pool } from './pool.ts';
import { MemoryStorage } from './storage/memory-storage.ts';

describe('write() owns no reference to the caller buffer once it returns', () => {
  it('an unaligned write survives the caller overwriting its buffer right away', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), { logger: silentLogger, segmentBytes: 1 << 20 });
    await pool.createVolume('vm1', 1 << 20);
    const dev = pool.openExport('vm1');
    await dev.write(0, Buffer.alloc(8192, 0x11), true); // the edge block is on "disk"
    const src = Buffer.alloc(3000, 0xab);
    const pending = dev.write(1000, src, false);
    src.fill(0xee); // what an NBD connection does with its reused assembly buffer
    await pending;
    const back = Buffer.alloc(8192);
    await dev.read(0, back);
    expect(back.subarray(1000, 4000).every((b) => b === 0xab)).toBe(true);
    expect(back.subarray(0, 1000).every((b) => b === 0x11)).toBe(true);
    dev.close();
    await pool.close();
  });
});
