/**
 * The data path of every volume: reads through the overlay and the index, writes into the
 * open batch, range operations (trim, zero) as log entries, and the allocation map. The
 * BlockDevice handles of engine/volume-handle.ts call into this; validation of ranges happens
 * here, once.
 */
import assert from 'node:assert/strict';
import { BLOCK_SIZE, type AllocationExtent } from './block-device.ts';
import { EngineError } from './errors.ts';
import { ZERO_MARK } from './index/block-map.ts';
import { MAX_ENTRY_BLOCKS, OP_TRIM, OP_ZERO } from './log/format.ts';
import type { LogWriter } from './log/log-writer.ts';
import { SRC_DISK, SRC_HOLE, SRC_MEMORY, SRC_ZERO } from './layer.ts';
import type { VolumeState } from './volume-state.ts';

/** Retries of a read-modify-write whose edge block changed while it was being read. */
const MAX_RMW_ATTEMPTS = 16;

export interface VolumeIoOptions {
  writer: LogWriter;
  blocksPerSegment: number;
  /** Throws NO_SPACE when `bytes` more of log would exceed the pool's capacity. */
  reserveSpace: (bytes: number) => void;
}

export class VolumeIo {
  readonly #writer: LogWriter;
  readonly #blocksPerSegment: number;
  readonly #reserveSpace: (bytes: number) => void;

  constructor(opts: VolumeIoOptions) {
    this.#writer = opts.writer;
    this.#blocksPerSegment = opts.blocksPerSegment;
    this.#reserveSpace = opts.reserveSpace;
  }

  checkRange(vol: VolumeState, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new EngineError('INVALID_ARGUMENT', `invalid range offset=${offset} length=${length}`);
    }
    if (offset + length > vol.sizeBytes) {
      throw new EngineError('OUT_OF_RANGE', `range ${offset}+${length} is beyond the end of volume "${vol.name}" (${vol.sizeBytes} bytes)`);
    }
    if (vol.deleted) throw new EngineError('NOT_FOUND', `${vol.kind} "${vol.name}" was deleted`);
  }

  #checkWritable(vol: VolumeState): void {
    if (vol.readOnly) throw new EngineError('READ_ONLY', `${vol.kind} "${vol.name}" is read-only`);
  }

  async read(vol: VolumeState, offset: number, dest: Buffer): Promise<void> {
    this.checkRange(vol, offset, dest.length);
    const end = offset + dest.length;
    const endLba = Math.ceil(end / BLOCK_SIZE);
    let pending: Promise<void>[] | undefined;
    for (let lba = Math.floor(offset / BLOCK_SIZE); lba < endLba; ) {
      const n = vol.resolve(lba, endLba - lba);
      const runStart = Math.max(offset, lba * BLOCK_SIZE);
      const runEnd = Math.min(end, (lba + n) * BLOCK_SIZE);
      const destOffset = runStart - offset;
      if (vol.source === SRC_HOLE || vol.source === SRC_ZERO) {
        dest.fill(0, destOffset, destOffset + runEnd - runStart);
      } else if (vol.source === SRC_MEMORY) {
        this.#copyFromBatches(vol.pbn, runStart - lba * BLOCK_SIZE, dest, destOffset, runEnd - runStart);
      } else {
        (pending ??= []).push(this.#readDisk(vol.pbn, runStart - lba * BLOCK_SIZE, dest, destOffset, runEnd - runStart));
      }
      lba += n;
    }
    if (pending) await Promise.all(pending);
  }

  /** Copies `length` bytes starting `skip` bytes into the data of pbn (and the blocks after it). */
  #copyFromBatches(firstPbn: number, skip: number, dest: Buffer, destOffset: number, length: number): void {
    let pbn = firstPbn + Math.floor(skip / BLOCK_SIZE);
    let inBlock = skip % BLOCK_SIZE;
    let done = 0;
    while (done < length) {
      const batch = this.#writer.batchHolding(pbn);
      assert.ok(batch, `pending block ${pbn} is in no batch`);
      const n = Math.min(BLOCK_SIZE - inBlock, length - done);
      batch.copyBlock(pbn, inBlock, dest, destOffset + done, n);
      done += n;
      pbn++;
      inBlock = 0;
    }
  }

  async #readDisk(firstPbn: number, skip: number, dest: Buffer, destOffset: number, length: number): Promise<void> {
    const segmentNo = Math.floor(firstPbn / this.#blocksPerSegment);
    const position = (firstPbn % this.#blocksPerSegment) * BLOCK_SIZE + skip;
    const file = await this.#writer.segmentFile(segmentNo);
    const n = await file.read(dest, destOffset, length, position);
    if (n !== length) throw new EngineError('IO_ERROR', `short read of segment ${segmentNo} at ${position}`);
  }

  async write(vol: VolumeState, offset: number, src: Buffer, fua: boolean): Promise<void> {
    this.checkRange(vol, offset, src.length);
    this.#checkWritable(vol);
    if (src.length === 0) return fua ? this.#writer.flush() : undefined;
    this.#reserveSpace(src.length + BLOCK_SIZE);
    let data = src;
    if (this.#writer.isBackedUp) {
      data = Buffer.from(src); // the caller may reuse src once write() returns
      await this.#writer.waitForRoom();
    }
    if (offset % BLOCK_SIZE === 0 && data.length % BLOCK_SIZE === 0) {
      this.#insertBlocks(vol, offset / BLOCK_SIZE, data, data.length / BLOCK_SIZE);
    } else {
      // The edges are read asynchronously, and the caller may reuse src once we return.
      await this.#readModifyWrite(vol, offset, data === src ? Buffer.from(src) : data);
    }
    if (fua) await this.#writer.flush();
  }

  /**
   * Writes a sub-block range: reads the edge blocks, merges, inserts whole blocks. The insert
   * is synchronous after a check that the edges did not change during the read, so a
   * concurrent write to the same block is never lost.
   */
  async #readModifyWrite(vol: VolumeState, offset: number, src: Buffer): Promise<void> {
    const firstLba = Math.floor(offset / BLOCK_SIZE);
    const lastLba = Math.floor((offset + src.length - 1) / BLOCK_SIZE);
    const merged = Buffer.allocUnsafe((lastLba - firstLba + 1) * BLOCK_SIZE);
    for (let attempt = 1; ; attempt++) {
      const headStamp = this.#stamp(vol, firstLba);
      const tailStamp = this.#stamp(vol, lastLba);
      await this.read(vol, firstLba * BLOCK_SIZE, merged.subarray(0, BLOCK_SIZE));
      if (lastLba !== firstLba) await this.read(vol, lastLba * BLOCK_SIZE, merged.subarray(merged.length - BLOCK_SIZE));
      if (attempt < MAX_RMW_ATTEMPTS && (this.#stamp(vol, firstLba) !== headStamp || this.#stamp(vol, lastLba) !== tailStamp)) {
        continue;
      }
      if (vol.deleted) throw new EngineError('NOT_FOUND', `volume "${vol.name}" was deleted`);
      src.copy(merged, offset - firstLba * BLOCK_SIZE);
      this.#insertBlocks(vol, firstLba, merged, lastLba - firstLba + 1);
      return;
    }
  }

  /** Identifies a block's current content source; equal stamps mean equal content. */
  #stamp(vol: VolumeState, lba: number): number {
    vol.resolve(lba, 1);
    return vol.source === SRC_DISK || vol.source === SRC_MEMORY ? vol.pbn : -1 - vol.source;
  }

  #insertBlocks(vol: VolumeState, lba: number, data: Buffer, blocks: number): void {
    let at = 0;
    let batch = this.#writer.openBatch();
    while (blocks > 0) {
      const taken = batch.appendData(vol.top.id, lba, data, at * BLOCK_SIZE, blocks);
      if (taken === 0) {
        this.#writer.sealOpenBatch();
        batch = this.#writer.openBatch();
        continue;
      }
      vol.top.addPendingWrite(lba, taken, batch.firstPbn + batch.dataBlocks - taken);
      lba += taken;
      at += taken;
      blocks -= taken;
    }
    batch.writeRequests++;
  }

  async flush(): Promise<void> {
    return this.#writer.flush();
  }

  /** Trim unmaps whole blocks; the partial blocks at unaligned edges are left as they are. */
  async trim(vol: VolumeState, offset: number, length: number, fua: boolean): Promise<void> {
    this.checkRange(vol, offset, length);
    this.#checkWritable(vol);
    const first = Math.ceil(offset / BLOCK_SIZE);
    const end = Math.floor((offset + length) / BLOCK_SIZE);
    if (end > first) this.#insertRange(vol, first, end - first, OP_TRIM);
    if (fua) await this.#writer.flush();
  }

  async writeZeroes(vol: VolumeState, offset: number, length: number, opts: { fua: boolean; mayUnmap: boolean }): Promise<void> {
    this.checkRange(vol, offset, length);
    this.#checkWritable(vol);
    const first = Math.ceil(offset / BLOCK_SIZE);
    const end = Math.floor((offset + length) / BLOCK_SIZE);
    if (end <= first) {
      if (length > 0) await this.write(vol, offset, Buffer.alloc(length), false);
    } else {
      if (offset < first * BLOCK_SIZE) await this.write(vol, offset, Buffer.alloc(first * BLOCK_SIZE - offset), false);
      if (offset + length > end * BLOCK_SIZE) await this.write(vol, end * BLOCK_SIZE, Buffer.alloc(offset + length - end * BLOCK_SIZE), false);
      this.#insertRange(vol, first, end - first, opts.mayUnmap ? OP_TRIM : OP_ZERO);
    }
    if (opts.fua) await this.#writer.flush();
  }

  /** Logs a trim (unmap in the top layer) or an explicit zero over whole blocks. */
  #insertRange(vol: VolumeState, lba: number, count: number, op: typeof OP_TRIM | typeof OP_ZERO): void {
    const layer = vol.top;
    const value = op === OP_TRIM ? layer.unmapValue : ZERO_MARK;
    while (count > 0) {
      const n = Math.min(count, MAX_ENTRY_BLOCKS);
      let batch = this.#writer.openBatch();
      if (!batch.appendRange(layer.id, lba, n, op)) {
        this.#writer.sealOpenBatch();
        batch = this.#writer.openBatch();
        assert.ok(batch.appendRange(layer.id, lba, n, op));
      }
      const last = layer.pendingRanges.at(-1);
      if (last && last.batch === batch && last.value === value && last.order === batch.nextPbn && last.lba + last.count === lba) {
        last.count += n; // one pending range per contiguous run keeps resolve() cheap
      } else {
        layer.addPendingRange({ lba, count: n, value, order: batch.nextPbn, batch });
      }
      lba += n;
      count -= n;
    }
    // A range operation counts as one request towards the batching figures.
    this.#writer.openBatch().writeRequests++;
  }

  blockStatus(vol: VolumeState, offset: number, length: number, maxExtents: number): AllocationExtent[] {
    this.checkRange(vol, offset, length);
    const extents: AllocationExtent[] = [];
    const end = offset + length;
    let pos = offset;
    while (pos < end) {
      const lba = Math.floor(pos / BLOCK_SIZE);
      const n = vol.resolve(lba, Math.ceil(end / BLOCK_SIZE) - lba);
      const runEnd = Math.min(end, (lba + n) * BLOCK_SIZE);
      const hole = vol.source === SRC_HOLE;
      const zero = hole || vol.source === SRC_ZERO;
      const last = extents.at(-1);
      if (last && last.hole === hole && last.zero === zero) last.lengthBytes += runEnd - pos;
      else if (extents.length >= maxExtents) break;
      else extents.push({ lengthBytes: runEnd - pos, hole, zero });
      pos = runEnd;
    }
    return extents;
  }
}
