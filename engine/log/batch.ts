/**
 * A batch is one log record being filled in memory: a header block followed by data blocks,
 * in one buffer, so that writing it is a single pwrite. Its position in the log (segment and
 * offset) is fixed when it opens, so every block gets its final physical block number (pbn) at
 * arrival and the index can point at it before it reaches the disk.
 *
 *   buffer: [ header (4 KiB) | data block 0 | data block 1 | ... | unused capacity ]
 *            ^ pbn = firstPbn - 1   ^ firstPbn
 */
import assert from 'node:assert/strict';
import { BLOCK_SIZE } from '../block-device.ts';
import { HEADER_BYTES, MAX_ENTRIES, MAX_ENTRY_BLOCKS, OP_WRITE, writeEntry, type LogOp } from './format.ts';

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
  #settle: { resolve: () => void; reject: (err: Error) => void } | undefined;
  #durable: Promise<void> | undefined;

  constructor(buffer: Buffer, segmentNo: number, offsetInSegment: number, firstPbn: number, capacityBlocks: number) {
    assert.ok(buffer.length >= HEADER_BYTES + capacityBlocks * BLOCK_SIZE);
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

  get byteLength(): number {
    return HEADER_BYTES + this.dataBlocks * BLOCK_SIZE;
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
    const extend = volumeId === this.#lastVolumeId && lba === this.#lastLbaEnd && this.#lastCount < MAX_ENTRY_BLOCKS;
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
    }
    this.#lastLbaEnd = lba + n;
    this.dataBlocks += n;
    return n;
  }

  /** Records a trim or zero of `count` ≤ MAX_ENTRY_BLOCKS blocks; false when the header is full. */
  appendRange(volumeId: number, lba: number, count: number, op: LogOp): boolean {
    assert.ok(!this.sealed && op !== OP_WRITE && count > 0 && count <= MAX_ENTRY_BLOCKS);
    if (!this.hasRoomForEntry) return false;
    writeEntry(this.buffer, this.entryCount++, { volumeId, lba, count, op });
    this.#lastVolumeId = -1;
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
