import { describe, expect, it } from 'vitest';
import { EngineError } from './errors.ts';
import { silentLogger } from './logger.ts';
import { segmentFileName } from './log/format.ts';
import { Pool } from './pool.ts';
import { MemoryStorage } from './storage/memory-storage.ts';

const MiB = 1024 * 1024;
const opts = { logger: silentLogger, segmentBytes: 1 * MiB };

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 31 + seed * 7 + (i >> 12)) & 0xff;
  return b;
}

async function readBack(pool: Pool, name: string, offset: number, length: number): Promise<Buffer> {
  const dev = pool.openExport(name);
  const buf = Buffer.alloc(length);
  await dev.read(offset, buf);
  dev.close();
  return buf;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    if (err instanceof EngineError) return err.code;
    throw err;
  }
}

describe('volume management', () => {
  it('creates, lists, resizes and deletes volumes', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), opts);
    await pool.createVolume('vm1', 10 * MiB);
    await pool.createVolume('vm0', 1000); // rounded up to a whole block
    expect(pool.listVolumes().map((v) => [v.name, v.sizeBytes])).toEqual([
      ['vm0', 4096],
      ['vm1', 10 * MiB],
    ]);
    expect((await pool.resizeVolume('vm1', 20 * MiB)).sizeBytes).toBe(20 * MiB);
    await pool.deleteVolume('vm0');
    expect(pool.listExports()).toEqual(['vm1']);
    await pool.close();
  });

  it('reports each mistake with its code', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), opts);
    await pool.createVolume('vm1', MiB);
    expect(await codeOf(pool.createVolume('vm1', MiB))).toBe('ALREADY_EXISTS');
    expect(await codeOf(pool.createVolume('Bad/Name', MiB))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(pool.createVolume('vm2', 0))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(pool.createVolume('vm2', 2 ** 51))).toBe('OUT_OF_RANGE');
    expect(await codeOf(pool.resizeVolume('vm1', 4096))).toBe('FAILED_PRECONDITION');
    expect(await codeOf(pool.deleteVolume('nope'))).toBe('NOT_FOUND');
    const dev = pool.openExport('vm1');
    expect(await codeOf(pool.deleteVolume('vm1'))).toBe('BUSY');
    expect(await codeOf(dev.read(MiB - 4096, Buffer.alloc(8192)))).toBe('OUT_OF_RANGE');
    expect(await codeOf(dev.write(MiB, Buffer.alloc(1), false))).toBe('OUT_OF_RANGE');
    expect(await codeOf(dev.write(-1, Buffer.alloc(1), false))).toBe('INVALID_ARGUMENT');
    dev.close();
    await pool.deleteVolume('vm1');
    await pool.close();
  });

  it('a recreated volume of the same name reads zeros, not the old data', async () => {
    let storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, opts);
    await pool.createVolume('vm1', MiB);
    const dev = pool.openExport('vm1');
    await dev.write(0, pattern(65536, 1), false);
    await dev.flush();
    dev.close();
    await pool.deleteVolume('vm1');
    await pool.createVolume('vm1', MiB);
    expect((await readBack(pool, 'vm1', 0, 65536)).every((b) => b === 0)).toBe(true);
    storage = storage.powerCut();
    pool = await Pool.openWithStorage(storage, opts);
    expect((await readBack(pool, 'vm1', 0, 65536)).every((b) => b === 0)).toBe(true);
    await pool.close();
  });
});

describe('data path', () => {
  it('reads its own writes before they reach the disk, aligned or not', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), opts);
    await pool.createVolume('vm1', 4 * MiB);
    const dev = pool.openExport('vm1');
    const model = Buffer.alloc(4 * MiB);
    const writes: Array<[number, number]> = [[0, 8192], [5000, 3000], [4095, 2], [100_000, 70_000], [4 * MiB - 10, 10]];
    for (const [i, [off, len]] of writes.entries()) {
      const data = pattern(len, i + 1);
      data.copy(model, off);
      await dev.write(off, data, false);
      expect(await readBack(pool, 'vm1', 0, 4 * MiB)).toEqual(model);
    }
    dev.close();
    await pool.close();
  });

  it('a write larger than a batch and a segment is split and reads back whole', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), opts);
    await pool.createVolume('big', 8 * MiB);
    const dev = pool.openExport('big');
    const data = pattern(3 * MiB, 9);
    await dev.write(MiB, data, true);
    expect(await readBack(pool, 'big', MiB, 3 * MiB)).toEqual(data);
    dev.close();
    await pool.close();
  });

  it('trim and write-zeroes read as zeros and show as holes or zero extents', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), opts);
    await pool.createVolume('vm1', MiB);
    const dev = pool.openExport('vm1');
    await dev.write(0, pattern(MiB, 3), false);
    await dev.trim(65536, 65536, false);
    await dev.writeZeroes(262144, 8192, { fua: false, mayUnmap: false });
    await dev.writeZeroes(300_000, 10, { fua: false, mayUnmap: true }); // sub-block: written as zeros
    const after = await readBack(pool, 'vm1', 0, MiB);
    expect(after.subarray(65536, 131072).every((b) => b === 0)).toBe(true);
    expect(after.subarray(262144, 270336).every((b) => b === 0)).toBe(true);
    expect(after.subarray(300_000, 300_010).every((b) => b === 0)).toBe(true);
    expect(after.subarray(0, 65536)).toEqual(pattern(MiB, 3).subarray(0, 65536));
    expect(dev.blockStatus(0, 327680, 100)).toEqual([
      { lengthBytes: 65536, hole: false, zero: false },
      { lengthBytes: 65536, hole: true, zero: true },
      { lengthBytes: 131072, hole: false, zero: false },
      { lengthBytes: 8192, hole: false, zero: true },
      { lengthBytes: 327680 - 270336, hole: false, zero: false },
    ]);
    await dev.flush();
    // Once written, the same answers come from the index.
    expect(dev.blockStatus(0, 327680, 2)).toHaveLength(2);
    expect(dev.blockStatus(65536, 4096, 10)).toEqual([{ lengthBytes: 4096, hole: true, zero: true }]);
    dev.close();
    await pool.close();
  });

  it('trimming a whole 1 TiB volume costs metadata only', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), opts);
    await pool.createVolume('huge', 2 ** 40);
    const dev = pool.openExport('huge');
    await dev.write(2 ** 39, pattern(4096, 1), false);
    await dev.trim(0, 2 ** 40, true);
    expect(dev.blockStatus(0, 2 ** 40, 10)).toEqual([{ lengthBytes: 2 ** 40, hole: true, zero: true }]);
    expect((await readBack(pool, 'huge', 2 ** 39, 4096)).every((b) => b === 0)).toBe(true);
    dev.close();
    await pool.close();
  });

  it('one fdatasync answers the flushes of many volumes waiting in one batch', async () => {
    const storage = new MemoryStorage();
    const pool = await Pool.openWithStorage(storage, opts);
    const devs = [];
    for (let i = 0; i < 16; i++) {
      await pool.createVolume(`vm${i}`, MiB);
      devs.push(pool.openExport(`vm${i}`));
    }
    const before = storage.datasyncs;
    await Promise.all(devs.map(async (d, i) => {
      await d.write(4096 * i, pattern(4096, i), false);
      await d.flush();
    }));
    const stats = pool.stats();
    expect(storage.datasyncs - before).toBeLessThan(4);
    expect(stats.flushesPerFdatasync).toBeGreaterThan(4);
    expect(stats.writesPerBatch).toBeGreaterThan(4);
    for (const d of devs) d.close();
    await pool.close();
  });
});

describe('durability and recovery', () => {
  it('keeps flushed writes across a power cut and drops unflushed ones cleanly', async () => {
    let storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, opts);
    await pool.createVolume('vm1', MiB);
    const dev = pool.openExport('vm1');
    await dev.write(0, pattern(65536, 1), false);
    await dev.flush();
    await dev.write(0, pattern(4096, 2), false); // not flushed
    storage = storage.powerCut();
    pool = await Pool.openWithStorage(storage, opts);
    const back = await readBack(pool, 'vm1', 0, 65536);
    const first = pattern(65536, 1);
    // Block 0 is old or new; everything else is exactly the flushed data.
    expect([first.subarray(0, 4096), pattern(4096, 2)]).toContainEqual(back.subarray(0, 4096));
    expect(back.subarray(4096)).toEqual(first.subarray(4096));
    await pool.close();
  });

  it('a FUA write is durable without a flush', async () => {
    let storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, opts);
    await pool.createVolume('vm1', MiB);
    const dev = pool.openExport('vm1');
    await dev.write(8192, pattern(4096, 5), true);
    storage = storage.powerCut();
    pool = await Pool.openWithStorage(storage, opts);
    expect(await readBack(pool, 'vm1', 8192, 4096)).toEqual(pattern(4096, 5));
    await pool.close();
  });

  async function threeSyncedRecords(): Promise<MemoryStorage> {
    const storage = new MemoryStorage();
    const pool = await Pool.openWithStorage(storage, opts);
    await pool.createVolume('vm1', MiB);
    const dev = pool.openExport('vm1');
    await dev.write(0, pattern(4096, 1), true); // record 1
    await dev.write(4096, pattern(4096, 2), true); // record 2
    await dev.write(8192, pattern(4096, 3), true); // record 3
    dev.close();
    return storage;
  }

  /** Flips one byte of record `n` at `offset` in it (header 4 KiB + 1 data block per record). */
  async function damageRecord(storage: MemoryStorage, n: number, offset = 4096 + 100): Promise<void> {
    const seg = await storage.open(segmentFileName(1), { create: false });
    const one = Buffer.alloc(1);
    const at = (n - 1) * 8192 + offset;
    await seg.read(one, 0, 1, at);
    one[0] = one[0]! ^ 0xff;
    await seg.write(one, 0, 1, at);
    await seg.datasync();
  }

  it('replays a durable record with a damaged data block; only that block fails, with CORRUPTION', async () => {
    const storage = await threeSyncedRecords();
    await damageRecord(storage, 2, 4096 + 100); // record 3 was written after record 2 was synced
    const pool = await Pool.openWithStorage(storage.powerCut(), opts);
    expect(await readBack(pool, 'vm1', 0, 4096)).toEqual(pattern(4096, 1));
    await expect(readBack(pool, 'vm1', 4096, 4096)).rejects.toMatchObject({ code: 'CORRUPTION' });
    expect(await readBack(pool, 'vm1', 8192, 4096)).toEqual(pattern(4096, 3));
    await pool.close();
  });

  it('refuses to open when the header of a record that later records call durable is damaged', async () => {
    const storage = await threeSyncedRecords();
    await damageRecord(storage, 2, 8); // the seq field of record 2's header
    const error = await Pool.openWithStorage(storage.powerCut(), opts).then(() => undefined, (err: unknown) => err);
    expect(error).toBeInstanceOf(EngineError);
    expect((error as EngineError).code).toBe('CORRUPTION');
    expect((error as EngineError).message).toMatch(/log record 2 .* damaged .* record 3/);
  });

  it('takes a bad last record for a torn tail: the log ends before it, and goes on from there', async () => {
    let storage = await threeSyncedRecords();
    // A sector of its data never reached the disk, and nothing after it says it was durable.
    const seg = await storage.open(segmentFileName(1), { create: false });
    await seg.write(Buffer.alloc(512), 0, 512, 2 * 8192 + 4096 + 1024);
    await seg.datasync();
    storage = storage.powerCut();
    let pool = await Pool.openWithStorage(storage, opts);
    expect(await readBack(pool, 'vm1', 0, 8192)).toEqual(Buffer.concat([pattern(4096, 1), pattern(4096, 2)]));
    expect((await readBack(pool, 'vm1', 8192, 4096)).every((b) => b === 0)).toBe(true);
    // New writes continue where the log was cut, and survive the next restart.
    const dev2 = pool.openExport('vm1');
    await dev2.write(12288, pattern(4096, 4), true);
    dev2.close();
    storage = storage.powerCut();
    pool = await Pool.openWithStorage(storage, opts);
    expect((await readBack(pool, 'vm1', 8192, 4096)).every((b) => b === 0)).toBe(true);
    expect(await readBack(pool, 'vm1', 12288, 4096)).toEqual(pattern(4096, 4));
    await pool.close();
  });

  it('replays only the log after the checkpoint, and gets the same answer', async () => {
    let storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, { ...opts, checkpointIntervalBytes: 256 * 1024 });
    await pool.createVolume('vm1', 4 * MiB);
    const dev = pool.openExport('vm1');
    const model = Buffer.alloc(4 * MiB);
    for (let i = 0; i < 200; i++) {
      const off = ((i * 7919) % 1000) * 4096;
      const data = pattern(4096, i);
      data.copy(model, off);
      await dev.write(off, data, i % 10 === 0);
    }
    await dev.flush();
    dev.close();
    expect(await storage.exists('index.ckpt')).toBe(true);
    storage = storage.powerCut();
    pool = await Pool.openWithStorage(storage, opts);
    expect(await readBack(pool, 'vm1', 0, 4 * MiB)).toEqual(model);
    await pool.close();
    pool = await Pool.openWithStorage(storage, opts);
    expect(await readBack(pool, 'vm1', 0, 4 * MiB)).toEqual(model);
    await pool.close();
  });

  it('turns read-only after a failed fdatasync instead of pretending', async () => {
    const storage = new MemoryStorage();
    const pool = await Pool.openWithStorage(storage, opts);
    await pool.createVolume('vm1', MiB);
    const dev = pool.openExport('vm1');
    await dev.write(0, pattern(4096, 1), false);
    storage.faultHook = (op) => (op === 'datasync' ? new EngineError('IO_ERROR', 'injected EIO') : undefined);
    expect(await codeOf(dev.flush())).toBe('IO_ERROR');
    storage.faultHook = undefined;
    expect(await codeOf(dev.write(0, pattern(4096, 2), false))).toBe('IO_ERROR');
    expect(pool.stats().readOnly).toBe(true);
    dev.close();
    await pool.close();
  });
});

describe('space reclamation', () => {
  const small = { logger: silentLogger, segmentBytes: 69 * 4096, checkpointIntervalBytes: 1 << 20 };

  it('cleaning gives back the space of overwritten data and keeps every byte', async () => {
    let storage = new MemoryStorage();
    let pool = await Pool.openWithStorage(storage, small);
    await pool.createVolume('vm1', MiB);
    const dev = pool.openExport('vm1');
    const model = Buffer.alloc(MiB);
    for (let round = 0; round < 6; round++) {
      // Round 0 writes every block, later rounds only the even ones: old segments stay half live.
      for (let i = 0; i < 256; i += round === 0 ? 1 : 2) {
        const data = pattern(4096, round * 1000 + i);
        data.copy(model, i * 4096);
        await dev.write(i * 4096, data, false);
      }
      await dev.flush();
    }
    const before = pool.stats();
    expect(await pool.clean()).toBeGreaterThan(0);
    const after = pool.stats();
    expect(after.physicalBytes).toBeLessThan(before.physicalBytes / 2);
    expect(after.blocksRelocated).toBeGreaterThan(0);
    expect(await readBack(pool, 'vm1', 0, MiB)).toEqual(model);
    dev.close();
    storage = storage.powerCut();
    pool = await Pool.openWithStorage(storage, small);
    expect(await readBack(pool, 'vm1', 0, MiB)).toEqual(model);
    await pool.close();
  });

  // The outcome is checked; the exact interleaving (copy decided while the write is still in
  // an unwritten batch) depends on which victims come first, so this test cannot force it.
  it('a newer write in flight wins over the cleaner copying the old block', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), small);
    await pool.createVolume('vm1', MiB);
    const dev = pool.openExport('vm1');
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 200; i++) await dev.write(i * 4096, pattern(4096, round), false);
      await dev.flush();
    }
    // Block 0 stays the only live block of its segment, so the cleaner will copy it.
    for (let i = 1; i < 200; i++) await dev.write(i * 4096, pattern(4096, 7), false);
    await dev.flush();
    const cleaning = pool.clean();
    await dev.write(0, pattern(4096, 99), false); // races with the copies
    await cleaning;
    await dev.flush();
    expect(await readBack(pool, 'vm1', 0, 4096)).toEqual(pattern(4096, 99));
    dev.close();
    await pool.close();
  });

  it('a full pool answers NO_SPACE, stays readable, and takes writes again after a delete', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), { ...small, capacityBytes: 16 * 69 * 4096 });
    await pool.createVolume('a', 8 * MiB);
    await pool.createVolume('b', 8 * MiB);
    const a = pool.openExport('a');
    let written = 0;
    let code = 'ok';
    while (code === 'ok' && written < 8 * MiB) {
      code = await codeOf(a.write(written, pattern(65536, written), false));
      if (code === 'ok') written += 65536;
    }
    expect(code).toBe('NO_SPACE');
    expect(await readBack(pool, 'a', 0, 65536)).toEqual(pattern(65536, 0));
    const b = pool.openExport('b');
    expect(await codeOf(b.write(0, pattern(65536, 1), false))).toBe('NO_SPACE');
    a.close();
    await pool.deleteVolume('a');
    await pool.clean();
    expect(await codeOf(b.write(0, pattern(65536, 1), true))).toBe('ok');
    expect(await readBack(pool, 'b', 0, 65536)).toEqual(pattern(65536, 1));
    b.close();
    await pool.close();
  });

  it('blocks freed by one volume and reused by the log never show in another volume', async () => {
    const storage = new MemoryStorage();
    const pool = await Pool.openWithStorage(storage, small);
    await pool.createVolume('a', MiB);
    const a = pool.openExport('a');
    for (let round = 0; round < 3; round++) await a.write(0, pattern(MiB, 40 + round), true);
    a.close();
    await pool.deleteVolume('a');
    expect(await pool.clean()).toBeGreaterThan(0); // segment files are deleted, numbers reused
    await pool.createVolume('b', 2 * MiB);
    const b = pool.openExport('b');
    await b.write(MiB, pattern(MiB, 7), true); // lands in reused segment numbers
    expect((await readBack(pool, 'b', 0, MiB)).every((x) => x === 0)).toBe(true);
    expect(await readBack(pool, 'b', MiB, MiB)).toEqual(pattern(MiB, 7));
    b.close();
    await pool.close();
    const again = await Pool.openWithStorage(storage, small);
    expect((await readBack(again, 'b', 0, MiB)).every((x) => x === 0)).toBe(true);
    expect(await readBack(again, 'b', MiB, MiB)).toEqual(pattern(MiB, 7));
    await again.close();
  });
});
