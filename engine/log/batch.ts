/**
 * A batch is one log record being filled in memory: a header block followed by data blocks,
 * in one buffer, so that writing it is a single pwrite. Its position in the log (segment and
 * offset) is fixed when it opens, so every block gets its final physical block number (pbn) at
 * arrival and the index can point at it before it reaches the disk.
 *
 *   buffer: [ header (4 KiB) | data block 0 | data block 1 | ... | meta blocks | unused ]
 *            ^ pbn = firstPbn - 1   ^ firstPbn
 *
 * The meta area (per-block CRCs, REF targets) is sized when the batch is sealed: it goes in the
 * header when it fits there, else right after the last data block (see format.ts).
 */
import assert from 'node:assert/strict';
import { BLOCK_SIZE } from '../block-device.ts';
import { crc32 } from 'node:zlib';
import {
  HEADER_BYTES,
  MAX_ENTRIES,
  MAX_ENTRY_BLOCKS,
  META_BYTES_PER_BLOCK,
  OP_REF,
  OP_WRITE,
  blockCrc,
  metaBlocksFor,
  metaOffset,
  writeEntry,
  type LogOp,
} from './format.ts';

/** Meta-area room a batch of `capacityBlocks` may need: a CRC per data block, a target per REF. */
export function metaReserveBytes(capacityBlocks: number): number {
  return Math.ceil((2 * capacityBlocks * META_BYTES_PER_BLOCK) / BLOCK_SIZE) * BLOCK_SIZE;
}

const NO_TARGETS = new Uint32Array(0);

export class Batch {
  readonly buffer: Buffer;
  readonly segmentNo: number;
  readonly offsetInSegment: number;
  /** pbn of the first data block (the header sits just before it). */
  readonly firstPbn: number;
  readonly capacityBlocks: number;
  seq = 0;
  entryCount = 0;
  dataBlocks = 0;
  /** Blocks mapped by REF entries (dedup), each with a target pbn in the meta area. */
  refCount = 0;
  /** Blocks of meta area after the data; fixed by seal(). */
  metaBlocks = 0;
  /** Set once the batch is on disk (its pbns are readable from the segment file). */
  written = false;
  /** NBD write requests (and RMW merges) that landed in this batch, for the coalescing ratio. */
  writeRequests = 0;
  /** Flush requests (FLUSH and FUA) answered by this batch's fdatasync. */
  flushRequests = 0;
  needsSync = false;
  sealed = false;
  // The last entry, kept to extend it when a write continues it (sequential streams).
  #lastVolumeId = -1;
  #lastLbaEnd = -1;
  #lastCount = 0;
  #lastOp = 0;
  #refTargets: Uint32Array | undefined;
  #settle: { resolve: () => void; reject: (err: Error) => void } | undefined;
  #durable: Promise<void> | undefined;

  constructor(buffer: Buffer, segmentNo: number, offsetInSegment: number, firstPbn: number, capacityBlocks: number) {
    assert.ok(buffer.length >= HEADER_BYTES + capacityBlocks * BLOCK_SIZE + metaReserveBytes(capacityBlocks));
    this.buffer = buffer;
    this.segmentNo = segmentNo;
    this.offsetInSegment = offsetInSegment;
    this.firstPbn = firstPbn;
    this.capacityBlocks = capacityBlocks;
    buffer.fill(0, 0, HEADER_BYTES);
  }

  get isEmpty(): boolean {
    return this.entryCount === 0;
  }

  /** The record's length on disk (final once sealed). */
  get byteLength(): number {
    return HEADER_BYTES + (this.dataBlocks + this.metaBlocks) * BLOCK_SIZE;
  }

  /** The pbn the next range operation is ordered at (see engine/overlay.ts). */
  get nextPbn(): number {
    return this.firstPbn + this.dataBlocks;
  }

  get hasRoomForEntry(): boolean {
    return this.entryCount < MAX_ENTRIES;
  }

  get freeBlocks(): number {
    return this.capacityBlocks - this.dataBlocks;
  }

  /**
   * Copies up to `blocks` blocks from src[srcOffset..] and records them; returns how many were
   * taken (0 when the batch is full). Their pbns are firstPbn+dataBlocks(before) onwards.
   */
  appendData(volumeId: number, lba: number, src: Buffer, srcOffset: number, blocks: number): number {
    assert.ok(!this.sealed);
    const extend = this.#lastOp === OP_WRITE && volumeId === this.#lastVolumeId && lba === this.#lastLbaEnd && this.#lastCount < MAX_ENTRY_BLOCKS;
    if (!extend && !this.hasRoomForEntry) return 0;
    const room = extend ? MAX_ENTRY_BLOCKS - this.#lastCount : MAX_ENTRY_BLOCKS;
    const n = Math.min(blocks, this.freeBlocks, room);
    if (n <= 0) return 0;
    const at = HEADER_BYTES + this.dataBlocks * BLOCK_SIZE;
    src.copy(this.buffer, at, srcOffset, srcOffset + n * BLOCK_SIZE);
    if (extend) {
      this.#lastCount += n;
      writeEntry(this.buffer, this.entryCount - 1, { volumeId, lba: lba - (this.#lastCount - n), count: this.#lastCount, op: OP_WRITE });
    } else {
      writeEntry(this.buffer, this.entryCount++, { volumeId, lba, count: n, op: OP_WRITE });
      this.#lastCount = n;
      this.#lastVolumeId = volumeId;
      this.#lastOp = OP_WRITE;
    }
    this.#lastLbaEnd = lba + n;
    this.dataBlocks += n;
    return n;
  }

  /**
   * Records that block lba of the volume now maps to the existing block `target` (dedup);
   * false when the batch has no room for it.
   */
  appendRef(volumeId: number, lba: number, target: number): boolean {
    assert.ok(!this.sealed);
    if (this.refCount >= this.capacityBlocks) return false;
    const extend = this.#lastOp === OP_REF && volumeId === this.#lastVolumeId && lba === this.#lastLbaEnd && this.#lastCount < MAX_ENTRY_BLOCKS;
    if (!extend && !this.hasRoomForEntry) return false;
    (this.#refTargets ??= new Uint32Array(this.capacityBlocks))[this.refCount++] = target;
    if (extend) {
      this.#lastCount++;
      writeEntry(this.buffer, this.entryCount - 1, { volumeId, lba: lba - (this.#lastCount - 1), count: this.#lastCount, op: OP_REF });
    } else {
      writeEntry(this.buffer, this.entryCount++, { volumeId, lba, count: 1, op: OP_REF });
      this.#lastCount = 1;
      this.#lastVolumeId = volumeId;
      this.#lastOp = OP_REF;
    }
    this.#lastLbaEnd = lba + 1;
    return true;
  }

  /** The targets of the REF blocks, in entry order (the first refCount values). */
  get refTargets(): Uint32Array {
    return this.#refTargets ?? NO_TARGETS;
  }

  /** Fixes the record's layout: no more operations join. */
  seal(): void {
    this.sealed = true;
    this.metaBlocks = metaBlocksFor(this.entryCount, this.dataBlocks, this.refCount);
  }

  /** Fills the meta area (CRC of each data block, REF targets); returns the CRC of the area. */
  writeMeta(): number {
    assert.ok(this.sealed);
    const buf = this.buffer;
    const start = metaOffset(this);
    let at = start;
    for (let i = 0; i < this.dataBlocks; i++, at += META_BYTES_PER_BLOCK) buf.writeUInt32LE(blockCrc(buf, HEADER_BYTES + i * BLOCK_SIZE), at);
    for (let i = 0; i < this.refCount; i++, at += META_BYTES_PER_BLOCK) buf.writeUInt32LE(this.#refTargets![i]!, at);
    const crc = crc32(buf.subarray(start, at));
    if (this.metaBlocks > 0) buf.fill(0, at, start + this.metaBlocks * BLOCK_SIZE);
    return crc;
  }

  /** The CRC of data block i, once writeMeta() ran. */
  blockCrcAt(i: number): number {
    return this.buffer.readUInt32LE(metaOffset(this) + i * META_BYTES_PER_BLOCK);
  }

  /** Records a trim or zero of `count` ≤ MAX_ENTRY_BLOCKS blocks; false when the header is full. */
  appendRange(volumeId: number, lba: number, count: number, op: LogOp): boolean {
    assert.ok(!this.sealed && op !== OP_WRITE && op !== OP_REF && count > 0 && count <= MAX_ENTRY_BLOCKS);
    if (!this.hasRoomForEntry) return false;
    writeEntry(this.buffer, this.entryCount++, { volumeId, lba, count, op });
    this.#lastVolumeId = -1;
    this.#lastOp = op;
    return true;
  }

  /** Copies bytes of an in-memory data block (pbn inside this batch) into dest. */
  copyBlock(pbn: number, byteInBlock: number, dest: Buffer, destOffset: number, length: number): void {
    const block = pbn - this.firstPbn;
    assert.ok(block >= 0 && block < this.dataBlocks && byteInBlock + length <= BLOCK_SIZE);
    const at = HEADER_BYTES + block * BLOCK_SIZE + byteInBlock;
    this.buffer.copy(dest, destOffset, at, at + length);
  }

  containsPbn(pbn: number): boolean {
    return pbn >= this.firstPbn && pbn < this.firstPbn + this.dataBlocks;
  }

  /** A promise that settles when this batch is on stable storage (or failed). */
  durable(): Promise<void> {
    if (!this.#durable) {
      this.#durable = new Promise<void>((resolve, reject) => {
        this.#settle = { resolve, reject };
      });
    }
    return this.#durable;
  }

  settle(err: Error | undefined): void {
    if (!this.#settle) {
      // Nobody waited; remember the outcome for a late waiter.
      this.#durable = err ? Promise.reject(err) : Promise.resolve();
      this.#durable.catch(() => {});
      return;
    }
    if (err) this.#settle.reject(err);
    else this.#settle.resolve();
  }
}
