/**
 * Inline dedup at the pool level: identical blocks of dedup volumes are stored once, every
 * volume still reads exactly its own content through overwrites, restarts (REF records are
 * replayed) and cleaning (shared blocks are moved once and stay shared).
 */
import { describe, expect, it } from 'vitest';
import { silentLogger } from './logger.ts';
import { Pool } from './pool.ts';
import { MemoryStorage } from './storage/memory-storage.ts';

const MiB = 1024 * 1024;
const opts = { logger: silentLogger, segmentBytes: 1 * MiB, cacheBytes: 0 };

/** Distinct content per block (no accidental dedup inside one image). */
function image(blocks: number, seed: number): Buffer {
  const b = Buffer.alloc(blocks * 4096);
  for (let i = 0; i < b.length; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return b;
}

async function write(pool: Pool, name: string, offset: number, data: Buffer): Promise<void> {
  const dev = pool.openExport(name);
  await dev.write(offset, data, false);
  await dev.flush();
  dev.close();
}

async function read(pool: Pool, name: string, length: number): Promise<Buffer> {
  const dev = pool.openExport(name);
  const buf = Buffer.alloc(length);
  await dev.read(0, buf);
  dev.close();
  return buf;
}

describe('inline dedup', () => {
  it('16 dedup volumes written with the same data store it once and read it back', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), opts);
    const data = image(256, 1); // 1 MiB
    for (let v = 0; v < 16; v++) {
      await pool.createVolume(`v${v}`, 2 * MiB, { dedup: true });
      await write(pool, `v${v}`, 0, data);
    }
    const s = pool.stats();
    expect(s.logicalBytes).toBe(16 * MiB);
    expect(s.savedByDedupBytes).toBe(15 * MiB);
    expect(s.dedupReferencedBlocks).toBe(15 * 256);
    // One copy of the data plus headers and REF metadata (4 bytes per block).
    expect(s.physicalBytes).toBeLessThan(1.1 * MiB + 64 * 1024);
    for (let v = 0; v < 16; v++) expect((await read(pool, `v${v}`, MiB)).equals(data)).toBe(true);
    await pool.close();
  });

  it('volumes without dedup neither use nor feed the index', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), opts);
    const data = image(64, 2);
    await pool.createVolume('plain1', MiB);
    await pool.createVolume('plain2', MiB);
    await write(pool, 'plain1', 0, data);
    await write(pool, 'plain2', 0, data);
    await pool.createVolume('d', MiB, { dedup: true });
    await write(pool, 'd', 0, data);
    expect(pool.stats().dedupReferencedBlocks).toBe(0);
    expect(pool.stats().savedByDedupBytes).toBe(0);
    await pool.close();
  });

  it('volumes match only within their dedup domain, which clones and restarts keep', async () => {
    const storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, opts);
    const data = image(64, 5);
    await pool.createVolume('t1-a', MiB, { dedupDomain: 'tenant1' });
    await pool.createVolume('t2-a', MiB, { dedupDomain: 'tenant2' });
    await pool.createVolume('pool-a', MiB, { dedup: true });
    for (const n of ['t1-a', 't2-a', 'pool-a']) await write(pool, n, 0, data);
    expect(pool.stats().dedupReferencedBlocks).toBe(0); // three domains: nothing shared
    await pool.close();
    pool = await Pool.openWithStorage(storage, opts);
    await pool.cloneVolume('t1-a', 't1-b'); // inherits tenant1
    await write(pool, 't1-b', 0, data); // same content as before: no new data, and no match needed
    await pool.createVolume('t1-c', MiB, { dedupDomain: 'tenant1' });
    await write(pool, 't1-c', 0, data); // matches t1-b's blocks (written since the restart)
    expect(pool.stats().dedupReferencedBlocks).toBe(64);
    await pool.createVolume('t2-b', MiB, { dedupDomain: 'tenant2' });
    await write(pool, 't2-b', 0, image(64, 6));
    expect(pool.stats().dedupReferencedBlocks).toBe(64);
    for (const n of ['t1-a', 't1-b', 't1-c', 't2-a', 'pool-a']) expect((await read(pool, n, data.length)).equals(data)).toBe(true);
    await expect(pool.createVolume('bad', MiB, { dedupDomain: '../x' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await pool.close();
  });

  it('overwriting a shared block changes only that volume, across a restart and a power cut', async () => {
    const storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, opts);
    const data = image(32, 3);
    for (const n of ['a', 'b', 'c']) {
      await pool.createVolume(n, MiB, { dedup: true });
      await write(pool, n, 0, data);
    }
    const patch = image(1, 9);
    await write(pool, 'b', 5 * 4096, patch);
    const expectedB = Buffer.from(data);
    patch.copy(expectedB, 5 * 4096);
    const check = async (p: Pool) => {
      expect((await read(p, 'a', data.length)).equals(data)).toBe(true);
      expect((await read(p, 'b', data.length)).equals(expectedB)).toBe(true);
      expect((await read(p, 'c', data.length)).equals(data)).toBe(true);
    };
    await check(pool);
    const cut = storage.powerCut(); // everything was flushed: REF records must replay
    pool = await Pool.openWithStorage(cut, opts);
    await check(pool);
    await pool.close();
    pool = await Pool.openWithStorage(cut, opts); // from the checkpoint this time
    await check(pool);
    await pool.close();
  });

  it('the cleaner moves a block shared by other volumes once and keeps it shared', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), opts);
    const data = image(16, 4); // a small part of segment 1, which churn then fills with dead blocks
    await pool.createVolume('gold', 4 * MiB, { dedup: true });
    await write(pool, 'gold', 0, data);
    for (let i = 0; i < 3; i++) {
      await pool.createVolume(`vm${i}`, 4 * MiB, { dedup: true });
      await write(pool, `vm${i}`, 0, data);
    }
    await pool.deleteVolume('gold'); // the owner is gone: only REFs from other volumes point there
    for (let i = 0; i < 6; i++) await write(pool, 'vm0', MiB, image(100, 10 + i)); // churn: overwritten 5 times
    const before = pool.stats();
    const freed = await pool.clean();
    const after = pool.stats();
    expect(freed).toBeGreaterThan(0);
    expect(after.segments).toBeLessThan(before.segments);
    // The 16 shared blocks move once each (not once per volume), plus vm0's live churn.
    expect(after.blocksRelocated - before.blocksRelocated).toBeLessThanOrEqual(16 + 100);
    for (let i = 0; i < 3; i++) expect((await read(pool, `vm${i}`, data.length)).equals(data)).toBe(true);
    expect(after.savedByDedupBytes).toBeGreaterThanOrEqual(2 * data.length);
    await pool.close();
  });
});
