/**
 * Record layout v2 end to end: a batch as the writer seals it, read back by the scanner and by
 * the checksum loader — meta area in the header and after the data, REF targets, and damage.
 */
import { describe, expect, it } from 'vitest';
import { BLOCK_SIZE } from '../block-device.ts';
import { MemoryStorage } from '../storage/memory-storage.ts';
import { Batch, metaReserveBytes } from './batch.ts';
import { HEADER_BYTES, OP_REF, OP_TRIM, OP_WRITE, blockCrc, sealHeader } from './format.ts';
import { readRecord, readSegmentChecksums } from './log-scanner.ts';

const SEGMENT_BYTES = 64 * 1024 * 1024;
const BLOCKS_PER_SEGMENT = SEGMENT_BYTES / BLOCK_SIZE;
const POOL = 77;

function data(blocks: number, seed: number): Buffer {
  const b = Buffer.alloc(blocks * BLOCK_SIZE);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

/** Builds a sealed record of `blocks` data blocks (one entry) and `refs` REF blocks at segment 3 offset 0. */
function record(blocks: number, refs: number): Batch {
  const capacity = 2048;
  const batch = new Batch(Buffer.alloc(HEADER_BYTES + capacity * BLOCK_SIZE + metaReserveBytes(capacity)), 3, 0, 3 * BLOCKS_PER_SEGMENT + 1, capacity);
  if (blocks > 0) expect(batch.appendData(5, 100, data(blocks, 1), 0, blocks)).toBe(blocks);
  batch.appendRange(5, 9000, 4, OP_TRIM);
  for (let i = 0; i < refs; i++) expect(batch.appendRef(6, 50 + i, 1000 + i * 3)).toBe(true);
  batch.seq = 42;
  batch.seal();
  sealHeader(batch.buffer, { seq: 42, poolId: POOL, entryCount: batch.entryCount, dataBlocks: batch.dataBlocks, dataCrc: batch.writeMeta(), metaBlocks: batch.metaBlocks, refCount: batch.refCount, syncedSeq: 0 });
  return batch;
}

async function store(batch: Batch): Promise<MemoryStorage> {
  const storage = new MemoryStorage();
  const file = await storage.open('seg', { create: true });
  await file.truncate(SEGMENT_BYTES);
  await file.write(batch.buffer, 0, batch.byteLength, 0);
  return storage;
}

const scratch = () => ({ header: Buffer.alloc(HEADER_BYTES), data: Buffer.alloc(8 * 1024 * 1024) });

describe('log record v2', () => {
  for (const [blocks, refs, where] of [
    [3, 2, 'in the header'],
    [1500, 0, 'after the data'],
    [10, 1500, 'after the data (REF targets)'],
  ] as const) {
    it(`round-trips ${blocks} data blocks and ${refs} REFs with the meta area ${where}`, async () => {
      const batch = record(blocks, refs);
      expect(batch.metaBlocks > 0).toBe(where !== 'in the header');
      const storage = await store(batch);
      const file = await storage.open('seg', { create: false });
      const { header, data: buf } = scratch();
      const rec = await readRecord(file, { segmentNo: 3, offsetInSegment: 0, nextSeq: 42 }, { poolId: POOL, segmentBytes: SEGMENT_BYTES }, header, buf);
      if (typeof rec === 'string') throw new Error(rec);
      expect(rec.entries.map((e) => e.op)).toEqual([...(blocks > 0 ? [OP_WRITE] : []), OP_TRIM, ...(refs > 0 ? [OP_REF] : [])]);
      expect([...rec.refTargets]).toEqual(Array.from({ length: refs }, (_, i) => 1000 + i * 3));
      expect(rec.blockCrcs?.[0]).toBe(blockCrc(data(blocks, 1), 0));
      const seen = new Map<number, number>();
      await readSegmentChecksums(file, 3, { poolId: POOL, segmentBytes: SEGMENT_BYTES }, { crc: (pbn, crc) => seen.set(pbn, crc), unverifiable: () => {} });
      expect(seen.size).toBe(blocks);
      expect(seen.get(3 * BLOCKS_PER_SEGMENT + 1)).toBe(blockCrc(data(blocks, 1), 0));
    });
  }

  it('a flipped bit in a data block fails the record for recovery, not for a reader that skips data checks', async () => {
    const batch = record(8, 0);
    batch.buffer[HEADER_BYTES + 5 * BLOCK_SIZE + 17]! ^= 1;
    const storage = await store(batch);
    const file = await storage.open('seg', { create: false });
    const { header, data: buf } = scratch();
    const pos = { segmentNo: 3, offsetInSegment: 0, nextSeq: 42 };
    expect(await readRecord(file, pos, { poolId: POOL, segmentBytes: SEGMENT_BYTES }, header, buf)).toBe('torn or corrupt data');
    const lax = await readRecord(file, pos, { poolId: POOL, segmentBytes: SEGMENT_BYTES, verifyData: false }, header, buf);
    expect(typeof lax).toBe('object');
  });

  it('a damaged meta area fails the record', async () => {
    const batch = record(1500, 0);
    batch.buffer[HEADER_BYTES + 1500 * BLOCK_SIZE + 9]! ^= 0x80;
    const storage = await store(batch);
    const file = await storage.open('seg', { create: false });
    const { header, data: buf } = scratch();
    expect(await readRecord(file, { segmentNo: 3, offsetInSegment: 0, nextSeq: 42 }, { poolId: POOL, segmentBytes: SEGMENT_BYTES }, header, buf)).toBe('torn or corrupt meta');
  });
});
