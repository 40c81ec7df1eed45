/**
 * A layer: one copy-on-write level of a volume's content, with its own id (the id log entries
 * carry) and its mapping from logical blocks to where their bytes are, in two parts:
 *
 *   pending (overlay)  operations still in unwritten batches: block writes (lba → pbn in a
 *                      batch buffer) and range operations (trim, zero) with their log order
 *   index              the state of the log as written so far (exactly what replaying every
 *                      written record gives), which is what checkpoints save
 *
 * Keeping the index equal to "the log as written" is what makes checkpoints correct: a
 * checkpoint never refers to data that did not reach the disk. Reads consult the overlay
 * first.
 *
 * A volume's content is its top layer over its ancestors (engine/volume-state.ts): a block that
 * is UNMAPPED in a layer falls through to the parent. A snapshot freezes the top layer; frozen
 * layers receive no new operations, only the application of batches already in flight.
 *
 * Ordering inside the overlay uses pbns, which grow with log order: a range operation is
 * stamped with the pbn the next data block would get (`order`), so a block write with pbn p is
 * newer than a range operation of order o exactly when p ≥ o. Range operations appended with no
 * data block in between share an order; `seq` (pool-wide, increasing) breaks the tie.
 *
 * A dedup reference (REF: this block now holds the same bytes as the existing block `value`) is
 * ordered like a range operation of one block; it is kept in a map by LBA since a batch may hold
 * thousands of them.
 */
import assert from 'node:assert/strict';
import { BlockMap, UNMAPPED, ZERO_MARK } from './index/block-map.ts';
import type { Batch } from './log/batch.ts';
import { isPbn, type SegmentUsage } from './segment-usage.ts';

export interface PendingRange {
  lba: number;
  count: number;
  /** UNMAPPED (trim) or ZERO_MARK (zero, allocated); for a REF, the target pbn. */
  value: number;
  order: number;
  /** Ties between operations of the same order: the larger seq is newer. */
  seq: number;
  batch: Batch;
  /** REF only: the batch holding the target while it is not on disk yet. */
  targetBatch?: Batch | undefined;
}

let nextPendingSeq = 1;
/** A fresh tie-breaker for a pending range or REF. */
export function pendingSeq(): number {
  return nextPendingSeq++;
}

/** True when no pending operation was stamped after `seq`. */
export function isLatestPendingSeq(seq: number): boolean {
  return seq === nextPendingSeq - 1;
}

function newer(a: PendingRange, b: PendingRange | undefined): boolean {
  return !b || a.order > b.order || (a.order === b.order && a.seq > b.seq);
}

/** What a block resolves to; see resolve(). */
export const SRC_HOLE = 0;
export const SRC_ZERO = 1;
export const SRC_DISK = 2;
export const SRC_MEMORY = 3;
export type BlockSource = typeof SRC_HOLE | typeof SRC_ZERO | typeof SRC_DISK | typeof SRC_MEMORY;

export class Layer {
  readonly id: number;
  /** Changes only when a background flatten replaces the ancestors by an equivalent layer. */
  parent: Layer | undefined;
  readonly createdAtMs: number;
  index: BlockMap;
  frozen = false;
  /** Made by flattening a chain: its map repeats references its ancestors also held. */
  flattened = false;
  /** Told of every reference the index gains or drops (set once the pool is recovered). */
  usage: SegmentUsage | undefined;
  /** LBA → pbn of block writes in unwritten batches: small and short-lived, so a plain Map. */
  readonly pendingBlocks = new Map<number, number>();
  pendingRanges: PendingRange[] = [];
  /** LBA → pending dedup reference (count 1). */
  readonly pendingRefs = new Map<number, PendingRange>();
  /** Result of the last resolve(): the source and, for DISK/MEMORY, the first block's pbn. */
  source: BlockSource = SRC_HOLE;
  pbn = 0;

  constructor(id: number, parent: Layer | undefined, createdAtMs: number, index = new BlockMap()) {
    this.id = id;
    this.parent = parent;
    this.createdAtMs = createdAtMs;
    this.index = index;
  }

  /** Length of the chain this layer heads (1 for a layer without parent). */
  get depth(): number {
    let d = 1;
    for (let l = this.parent; l; l = l.parent) d++;
    return d;
  }

  /**
   * What an unmap writes in this layer: UNMAPPED lets reads fall through to the parent, so a
   * layer with a parent records an explicit zero instead.
   */
  get unmapValue(): number {
    return this.parent ? ZERO_MARK : UNMAPPED;
  }

  get hasPending(): boolean {
    return this.pendingBlocks.size > 0 || this.pendingRanges.length > 0 || this.pendingRefs.size > 0;
  }

  /**
   * Resolves, in this layer only, the run of blocks starting at lba (at most maxCount) that
   * share one source and, for DISK and MEMORY, consecutive pbns. Sets `source` and `pbn`;
   * returns the run length. SRC_HOLE means "not in this layer" (the parent decides).
   */
  resolve(lba: number, maxCount: number): number {
    if (!this.hasPending) return this.#fromMap(this.index, lba, maxCount);
    let limit = maxCount;
    // Clip the run where any pending range starts or ends, so one answer holds for all of it.
    for (const r of this.pendingRanges) {
      if (r.lba > lba) limit = Math.min(limit, r.lba - lba);
      else if (r.lba + r.count > lba) limit = Math.min(limit, r.lba + r.count - lba);
    }
    const written = this.pendingBlocks.get(lba) ?? UNMAPPED;
    let range = this.#newestRange(lba, written);
    const ref = this.pendingRefs.size > 0 ? this.pendingRefs.get(lba) : undefined;
    if (ref && !(written !== UNMAPPED && written >= ref.order) && newer(ref, range)) {
      const target = ref.targetBatch;
      this.source = target && !target.written ? SRC_MEMORY : SRC_DISK;
      this.pbn = ref.value;
      return 1;
    }
    if (range) {
      this.source = range.value === ZERO_MARK ? SRC_ZERO : SRC_HOLE;
      this.pbn = 0;
      return this.#clipAtPendingWrite(lba + 1, limit - 1) + 1;
    }
    if (written !== UNMAPPED) {
      let n = 1;
      const refs = this.pendingRefs;
      while (n < limit && this.pendingBlocks.get(lba + n) === written + n && (refs.size === 0 || !refs.has(lba + n))) n++;
      this.source = SRC_MEMORY;
      this.pbn = written;
      return n;
    }
    return this.#fromMap(this.index, lba, this.#clipAtPendingWrite(lba + 1, limit - 1) + 1);
  }

  /** How many blocks from `from` (at most count) precede the first pending block write or REF. */
  #clipAtPendingWrite(from: number, count: number): number {
    return clipAt(this.pendingRefs, from, clipAt(this.pendingBlocks, from, count));
  }

  #fromMap(map: BlockMap, lba: number, maxCount: number): number {
    const n = map.run(lba, maxCount);
    const v = map.runValue;
    if (v === UNMAPPED) this.source = SRC_HOLE;
    else if (v === ZERO_MARK) this.source = SRC_ZERO;
    else this.source = SRC_DISK;
    this.pbn = this.source === SRC_DISK ? v : 0;
    return n;
  }

  /** The newest pending range covering lba that is newer than the pending write (if any). */
  #newestRange(lba: number, writtenPbn: number): PendingRange | undefined {
    let best: PendingRange | undefined;
    for (const r of this.pendingRanges) {
      if (lba < r.lba || lba >= r.lba + r.count) continue;
      if (writtenPbn !== UNMAPPED && writtenPbn >= r.order) continue;
      if (newer(r, best)) best = r;
    }
    return best;
  }

  /** Records a block write that landed in an unwritten batch. */
  addPendingWrite(lba: number, count: number, firstPbn: number): void {
    for (let i = 0; i < count; i++) this.pendingBlocks.set(lba + i, firstPbn + i);
  }

  addPendingRange(range: PendingRange): void {
    this.pendingRanges.push(range);
  }

  /** A batch reached the disk: its operations move from the overlay into the index. */
  applyWrittenWrite(lba: number, count: number, firstPbn: number): void {
    const usage = this.usage;
    if (usage) {
      for (let i = 0; i < count; i++) {
        const old = this.index.get(lba + i);
        if (isPbn(old)) usage.remove(old);
      }
      usage.add(firstPbn, count);
    }
    this.index.setRun(lba, count, firstPbn);
    for (let i = 0; i < count; i++) {
      if (this.pendingBlocks.get(lba + i) === firstPbn + i) this.pendingBlocks.delete(lba + i);
    }
  }

  /** A written REF: lba..lba+count-1 now point at targets[at..]. */
  applyWrittenRef(lba: number, count: number, targets: Uint32Array, at: number): void {
    const usage = this.usage;
    for (let i = 0; i < count; i++) {
      const target = targets[at + i]!;
      if (usage) {
        const old = this.index.get(lba + i);
        if (isPbn(old)) usage.remove(old);
        usage.add(target);
      }
      this.index.setRun(lba + i, 1, target);
    }
  }

  applyWrittenRange(lba: number, count: number, value: number): void {
    assert.ok(value === UNMAPPED || value === ZERO_MARK);
    const usage = this.usage;
    if (usage) {
      this.index.forEach(lba, lba + count, (_l, old) => {
        if (isPbn(old)) usage.remove(old);
      });
    }
    this.index.fill(lba, count, value);
  }

  /** Drops the pending ranges of a written batch (after its entries were applied). */
  forgetBatch(batch: Batch): void {
    if (this.pendingRefs.size > 0) {
      for (const [lba, r] of this.pendingRefs) if (r.batch === batch) this.pendingRefs.delete(lba);
    }
    if (this.pendingRanges.length === 0) return;
    this.pendingRanges = this.pendingRanges.filter((r) => r.batch !== batch);
  }
}

/** How many blocks from `from` (at most count) precede the first key of `pending`. */
function clipAt(pending: Map<number, unknown>, from: number, count: number): number {
  if (count <= 0 || pending.size === 0) return Math.max(0, count);
  if (count <= pending.size * 4) {
    // Probing each block is cheaper than scanning the whole map.
    for (let i = 0; i < count; i++) if (pending.has(from + i)) return i;
    return count;
  }
  let first = count;
  for (const lba of pending.keys()) if (lba >= from && lba - from < first) first = lba - from;
  return first;
}
