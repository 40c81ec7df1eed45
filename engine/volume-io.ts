/**
 * The data path of every volume: reads through the overlay and the index, writes into the
 * open batch, range operations (trim, zero) as log entries, and the allocation map. The
 * BlockDevice handles of engine/volume-handle.ts call into this; validation of ranges happens
 * here, once.
 */
import assert from 'node:assert/strict';
import { BLOCK_SIZE, type AllocationExtent } from './block-device.ts';
import type { BlockCache } from './block-cache.ts';
import type { DedupIndex } from './dedup-index.ts';
import type { BlockChecksums } from './log/block-checksums.ts';
import { EngineError } from './errors.ts';
import { ZERO_MARK } from './index/block-map.ts';
import { MAX_ENTRY_BLOCKS, OP_TRIM, OP_ZERO } from './log/format.ts';
import type { LogWriter } from './log/log-writer.ts';
import { SRC_DISK, SRC_HOLE, SRC_MEMORY, SRC_ZERO, isLatestPendingSeq, pendingSeq } from './layer.ts';
import type { VolumeState } from './volume-state.ts';

/** Retries of a read-modify-write whose edge block changed while it was being read. */
const MAX_RMW_ATTEMPTS = 16;

export interface VolumeIoOptions {
  writer: LogWriter;
  blocksPerSegment: number;
  /** Throws NO_SPACE when `bytes` more of log would exceed the pool's capacity. */
  reserveSpace: (bytes: number) => void;
  /** Every block read from disk is checked against its CRC from the log. */
  checksums: BlockChecksums;
  cache: BlockCache;
  dedup: DedupIndex;
}

export class VolumeIo {
  readonly #writer: LogWriter;
  readonly #blocksPerSegment: number;
  readonly #reserveSpace: (bytes: number) => void;
  readonly #checksums: BlockChecksums;
  readonly #cache: BlockCache;
  readonly #dedup: DedupIndex;

  constructor(opts: VolumeIoOptions) {
    this.#writer = opts.writer;
    this.#blocksPerSegment = opts.blocksPerSegment;
    this.#reserveSpace = opts.reserveSpace;
    this.#checksums = opts.checksums;
    this.#cache = opts.cache;
    this.#dedup = opts.dedup;
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
    // A failed pool refuses writes before any read-modify-write reads (the log's error, not a read's).
    const failure = this.#writer.failure;
    if (failure) throw failure;
  }

  async read(vol: VolumeState, offset: number, dest: Buffer): Promise<void> {
    this.checkRange(vol, offset, dest.length);
    const end = offset + dest.length;
    const endLba = Math.ceil(end / BLOCK_SIZE);
    let pending: Promise<void>[] | undefined;
    try {
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
    } catch (err) {
      // Disk reads already started must not fail later as unhandled rejections.
      if (pending) await Promise.allSettled(pending);
      throw err;
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

  /**
   * Reads `length` bytes starting `skip` bytes into the data of firstPbn (and the blocks after
   * it): cached blocks from memory, the others from disk as whole blocks, verified against
   * their CRCs before a byte reaches the caller, then cached.
   */
  async #readDisk(firstPbn: number, skip: number, dest: Buffer, destOffset: number, length: number): Promise<void> {
    const cache = this.#cache;
    const first = firstPbn + Math.floor(skip / BLOCK_SIZE);
    const head = skip % BLOCK_SIZE; // bytes of the first block not wanted
    const blocks = Math.ceil((head + length) / BLOCK_SIZE);
    for (let i = 0; i < blocks; ) {
      const cached = cache.enabled ? cache.cachedRun(first + i, blocks - i) : 0;
      if (cached > 0) {
        const from = i === 0 ? head : 0;
        const at = i * BLOCK_SIZE - head + from; // where this run's wanted bytes go in the request
        cache.readRun(first + i, cached, from, dest, destOffset + at, Math.min(cached * BLOCK_SIZE - from, length - at));
        i += cached;
        continue;
      }
      let j = i + 1;
      while (j < blocks && !(cache.enabled && cache.has(first + j))) j++;
      if (cache.enabled) cache.misses += j - i;
      await this.#readBlocksFromDisk(first + i, j - i, i * BLOCK_SIZE - head, dest, destOffset, length);
      i = j;
    }
  }

  /**
   * Reads `count` whole blocks from pbn; `at` is where the first block's byte 0 falls in the
   * request (negative when the request starts inside it). Partial edge blocks go through a
   * scratch buffer: the check needs the whole block.
   */
  async #readBlocksFromDisk(pbn: number, count: number, at: number, dest: Buffer, destOffset: number, length: number): Promise<void> {
    const segmentNo = Math.floor(pbn / this.#blocksPerSegment);
    const position = (pbn % this.#blocksPerSegment) * BLOCK_SIZE;
    const bytes = count * BLOCK_SIZE;
    const direct = at >= 0 && at + bytes <= length;
    const buf = direct ? dest : Buffer.allocUnsafe(bytes);
    const bufOffset = direct ? destOffset + at : 0;
    const file = await this.#writer.segmentFile(segmentNo);
    const n = await file.read(buf, bufOffset, bytes, position);
    if (n !== bytes) throw new EngineError('IO_ERROR', `short read of segment ${segmentNo} at ${position}`);
    await this.#checksums.verify(pbn, count, buf, bufOffset);
    if (this.#cache.enabled) for (let i = 0; i < count; i++) this.#cache.insert(pbn + i, buf, bufOffset + i * BLOCK_SIZE);
    if (!direct) {
      const from = Math.max(0, -at);
      const to = Math.min(bytes, length - at);
      buf.copy(dest, destOffset + at + from, from, to);
    }
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
    if (vol.dedup) return this.#insertBlocksDedup(vol, lba, data, blocks);
    this.#appendBlocks(vol, lba, data, 0, blocks);
    this.#writer.openBatch().writeRequests++;
  }

  /**
   * Each block whose content is already stored becomes a reference to it (4 bytes of log
   * instead of 4 KiB); runs of new blocks go in as data and are indexed by content.
   */
  #insertBlocksDedup(vol: VolumeState, lba: number, data: Buffer, blocks: number): void {
    const dedup = this.#dedup;
    const layer = vol.top;
    let runStart = 0;
    const keys: string[] = [];
    for (let i = 0; i <= blocks; i++) {
      const key = i < blocks ? dedup.key(data, i * BLOCK_SIZE, vol.dedupDomain) : '';
      const target = i < blocks ? dedup.lookup(key) : undefined;
      if (i < blocks && target === undefined) {
        keys.push(key);
        continue;
      }
      if (i > runStart) {
        const pbns: number[] = [];
        this.#appendBlocks(vol, lba + runStart, data, runStart, i - runStart, pbns);
        for (let k = 0; k < keys.length; k++) dedup.remember(keys[k]!, pbns[k]!);
        keys.length = 0;
      }
      runStart = i + 1;
      if (target === undefined) continue;
      let batch = this.#writer.openBatch();
      if (!batch.appendRef(layer.id, lba + i, target)) {
        this.#writer.sealOpenBatch();
        batch = this.#writer.openBatch();
        assert.ok(batch.appendRef(layer.id, lba + i, target));
      }
      layer.pendingRefs.set(lba + i, {
        lba: lba + i,
        count: 1,
        value: target,
        order: batch.nextPbn,
        seq: pendingSeq(),
        batch,
        targetBatch: this.#writer.batchHolding(target),
      });
      dedup.referencedBlocks++;
    }
    this.#writer.openBatch().writeRequests++;
  }

  /** Appends blocks [from, from+count) of data as written data; their pbns go to pbnsOut. */
  #appendBlocks(vol: VolumeState, lba: number, data: Buffer, from: number, count: number, pbnsOut?: number[]): void {
    let at = from;
    let blocks = count;
    let batch = this.#writer.openBatch();
    while (blocks > 0) {
      const taken = batch.appendData(vol.top.id, lba, data, at * BLOCK_SIZE, blocks);
      if (taken === 0) {
        this.#writer.sealOpenBatch();
        batch = this.#writer.openBatch();
        continue;
      }
      const firstPbn = batch.firstPbn + batch.dataBlocks - taken;
      vol.top.addPendingWrite(lba, taken, firstPbn);
      if (pbnsOut) for (let i = 0; i < taken; i++) pbnsOut.push(firstPbn + i);
      lba += taken;
      at += taken;
      blocks -= taken;
    }
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
      if (last && last.batch === batch && last.value === value && last.order === batch.nextPbn && last.lba + last.count === lba && isLatestPendingSeq(last.seq)) {
        last.count += n; // one pending range per contiguous run keeps resolve() cheap
      } else {
        layer.addPendingRange({ lba, count: n, value, order: batch.nextPbn, seq: pendingSeq(), batch });
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
