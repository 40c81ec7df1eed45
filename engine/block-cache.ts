/**
 * The shared block cache: verified 4 KiB blocks keyed by physical location (pbn), so a block
 * that 100 clones share is read from disk and checked once, then served from memory to all of
 * them (a boot storm of clones of one golden image hits here).
 *
 * Keying by pbn needs no invalidation on writes: a pbn's content never changes while its
 * segment exists (the log is append-only); only deleting a segment, after which its number can
 * be reused, must drop its blocks.
 *
 * Replacement is CLOCK (second chance): one reference bit per slot instead of moving list
 * nodes on every hit, so a hit costs a Map lookup and a copy.
 */
import { BLOCK_SIZE } from './block-device.ts';

const EMPTY = -1;

export class BlockCache {
  readonly capacityBlocks: number;
  readonly #slab: Buffer;
  readonly #slotOf = new Map<number, number>();
  /** pbn held by each slot, or EMPTY. */
  readonly #pbnOf: Float64Array;
  readonly #referenced: Uint8Array;
  #hand = 0;
  hits = 0;
  misses = 0;

  constructor(capacityBytes: number) {
    this.capacityBlocks = Math.max(0, Math.floor(capacityBytes / BLOCK_SIZE));
    // Pages of the slab are only committed by the OS as slots are first filled.
    this.#slab = Buffer.allocUnsafeSlow(this.capacityBlocks * BLOCK_SIZE);
    this.#pbnOf = new Float64Array(this.capacityBlocks).fill(EMPTY);
    this.#referenced = new Uint8Array(this.capacityBlocks);
  }

  get enabled(): boolean {
    return this.capacityBlocks > 0;
  }

  get sizeBlocks(): number {
    return this.#slotOf.size;
  }

  has(pbn: number): boolean {
    return this.#slotOf.has(pbn);
  }

  /**
   * How many blocks from pbn (at most max) are cached in consecutive slots, so they can be
   * copied out at once (a sequential read fills consecutive slots); 0 on a miss.
   */
  cachedRun(pbn: number, max: number): number {
    const slot = this.#slotOf.get(pbn);
    if (slot === undefined) return 0;
    let n = 1;
    while (n < max && slot + n < this.capacityBlocks && this.#pbnOf[slot + n] === pbn + n) n++;
    return n;
  }

  /** Copies `length` bytes starting `from` bytes into cached block pbn and the run after it. */
  readRun(pbn: number, count: number, from: number, dest: Buffer, destOffset: number, length: number): void {
    const slot = this.#slotOf.get(pbn)!;
    this.hits += count;
    this.#referenced.fill(1, slot, slot + count);
    const at = slot * BLOCK_SIZE + from;
    this.#slab.copy(dest, destOffset, at, at + length);
  }

  /** Copies bytes [from, from+length) of block pbn into dest at destOffset; false on a miss. */
  read(pbn: number, from: number, dest: Buffer, destOffset: number, length: number): boolean {
    const slot = this.#slotOf.get(pbn);
    if (slot === undefined) return false; // the caller counts misses: it reads them as runs
    this.hits++;
    this.#referenced[slot] = 1;
    const at = slot * BLOCK_SIZE + from;
    this.#slab.copy(dest, destOffset, at, at + length);
    return true;
  }

  /** Stores a verified block (src[offset..offset+4096]). */
  insert(pbn: number, src: Buffer, offset: number): void {
    if (!this.enabled || this.#slotOf.has(pbn)) return;
    const slot = this.#victim();
    const old = this.#pbnOf[slot]!;
    if (old !== EMPTY) this.#slotOf.delete(old);
    src.copy(this.#slab, slot * BLOCK_SIZE, offset, offset + BLOCK_SIZE);
    this.#pbnOf[slot] = pbn;
    this.#referenced[slot] = 0;
    this.#slotOf.set(pbn, slot);
  }

  /** Drops every block of the pbn range [first, first+count): a deleted segment. */
  dropRange(first: number, count: number): void {
    if (this.#slotOf.size === 0) return;
    const end = first + count;
    for (let slot = 0; slot < this.capacityBlocks; slot++) {
      const pbn = this.#pbnOf[slot]!;
      if (pbn >= first && pbn < end) {
        this.#slotOf.delete(pbn);
        this.#pbnOf[slot] = EMPTY;
        this.#referenced[slot] = 0;
      }
    }
  }

  #victim(): number {
    for (;;) {
      const slot = this.#hand;
      this.#hand = slot + 1 === this.capacityBlocks ? 0 : slot + 1;
      if (this.#pbnOf[slot] === EMPTY || this.#referenced[slot] === 0) return slot;
      this.#referenced[slot] = 0;
    }
  }
}
