/**
 * BlockMap: a volume's index from logical block address (LBA, 4 KiB blocks, 0 <= lba < 2^40) to
 * a 32-bit value. 0 (UNMAPPED) is a hole; 0xFFFFFFFF (ZERO_MARK) means "reads as zeros" and is
 * stored like any other value; every other value is a physical block reference owned by the
 * engine. The map is on the read hot path: get() and run() cost a radix walk plus at most a
 * binary search over SPARSE_MAX_ENTRIES, and allocate nothing. DESIGN P8 caps the memory at
 * 8 bytes per mapped block for random writes where no two neighbours are physically contiguous.
 *
 * Layout. The LBA space is cut into chunks of 4096 blocks. A three-level radix directory, built
 * on demand and freed when empty, maps a chunk index to the leaf holding that chunk:
 *
 *   lba:  | top: 10 bits | mid: 9 | slot: 9 | offset in chunk: 12 |
 *            top[1024] --> Mid.dirs[512] --> Dir.slots[512] --> leaf
 *
 *   Dir.slots:  ... | S | S | S | S | D | . | R | Z | Z | ...
 *                     \_____________/   |   .   |   \___/
 *                     one sparse leaf   |  hole |   the shared all-ZERO_MARK run leaf
 *                     spanning 4 chunks dense   run leaf: first, first+1, first+2, ...
 *
 * Leaves:
 *  - sparse: sorted Uint16 offsets and their Uint32 values in one ArrayBuffer (6 bytes per entry,
 *    capacity grown by 1/8), found by binary search. It spans 2^k aligned chunks, k = 0..4, so
 *    at most 65536 blocks and its offsets fit 16 bits. Wide spans exist for scattered writes: a
 *    leaf's fixed cost is ~350 bytes of V8 objects, which 41 entries (1% of one chunk) cannot
 *    carry but 650 (1% of 16 chunks) can.
 *  - dense: a Uint32Array(4096) for one chunk, indexed directly (4 bytes per block, mapped or not).
 *  - run: one chunk whose 4096 blocks all hold first + step * offset, step 0 or 1. It holds no
 *    array; sequential writes and large zero-fills become run leaves. Run leaves are immutable,
 *    and the all-ZERO_MARK one is a shared singleton (a zeroed 4 TiB costs only directory slots).
 *
 * Invariants (all checked by verify(); the fuzz test calls it after every operation):
 *  - Every leaf holds at least one mapping. A sparse leaf occupies exactly the slots of its
 *    aligned span; dense and run leaves occupy one slot. Dir.used and Mid.used count occupied
 *    entries, and an empty Dir or Mid is unlinked.
 *  - sparse: 1 <= count <= SPARSE_MAX_ENTRIES (2730: beyond it the 16 KiB dense table is
 *    smaller); offsets strictly increase and lie inside the span; values are non-zero.
 *  - dense: DENSE_MIN_ENTRIES (2341) <= count <= 4096, so a dense chunk costs at most 7 bytes
 *    per mapped block. The gap between 2341 and 2730 is hysteresis: a chunk hovering around one
 *    threshold does not convert back and forth on every write.
 *  - run: first + step * 4095 <= 0xFFFFFFFE when step is 1 (the run never reaches ZERO_MARK).
 *  - mappedCount is the sum of the leaves' counts (a run leaf counts 4096).
 *
 * Transitions. A sparse leaf that would exceed SPARSE_MAX_ENTRIES splits into its two halves,
 * or becomes dense once it spans one chunk. A sparse leaf that drops to MERGE_MAX_ENTRIES joins
 * its equal-span sparse buddy (or absorbs an empty buddy range) while the result stays at or
 * below MERGE_MAX_ENTRIES. A dense chunk turns sparse below DENSE_MIN_ENTRIES; it becomes a run
 * leaf when a write leaves it a perfect run and either filled its last hole or ended at its last
 * block (so rewriting a chunk front to back is caught). A write covering a whole chunk makes a
 * run leaf directly; changing part of a run leaf first expands it to dense.
 *
 * Costs the engine should know. set() into a sparse leaf shifts the entries after it: at most
 * 2730 * 6 bytes moved with copyWithin (a few microseconds at worst, typically much less). A
 * sparse leaf that overflows splits (copies its entries, at most 4 times along the path) or
 * becomes dense (one 16 KiB allocation). fill() and setRun() work per chunk, not per block, for
 * whole chunks; trimming (fill UNMAPPED) visits only occupied leaves. Partial-chunk writes cost
 * O(len) plus the shift. forEach() must not mutate the map (asserted).
 *
 * Memory. memoryBytes() adds typed-array bytes to fixed costs per object (constants below)
 * measured on Node 24 x64, which has no pointer compression, as the growth of heap plus
 * ArrayBuffer bytes over 50,000 allocations; malloc overhead of ArrayBuffer backing stores is
 * not counted. Bytes per mapped block, estimate / V8 heap (hack/bench/index-memory.ts):
 *  - 1,000,000 random blocks in 16 GiB, no two values contiguous: 6.6 / 6.8
 *  - 1% of a 1 TiB volume, scattered, written in random order: 7.2 / 7.3
 *  - sequential (setRun batches of contiguous values): 0.03 / 0.2; sequential LBAs with
 *    non-contiguous values (dense chunks): 4.1 / 4.2
 *  - one block per 4096-block chunk over 1 TiB: 37 / 40. P8 cannot hold at this sparsity: a
 *    sparse leaf spans at most 16 chunks, so each holds ~16 entries and its ~350 fixed bytes
 *    plus the 4 KiB Dir per 512 chunks dominate. It is ~2.5 MiB per TiB of volume.
 * Below ~0.5% density the fixed costs take over gradually; at and above 1% the worst case of
 * random writes is 6 bytes per entry times the 1/8 growth slack plus under 1 byte of overhead.
 * Every map also holds the 8 KiB top array.
 *
 * Checkpoint image (serialize/deserialize), little-endian:
 *   image   := header record* crc32
 *   header  := magic u32 ("BMAP" = 0x50414d42) | version u16 (1) | reserved u16 (0)
 *              | mappedCount u64 | recordCount u32 | reserved u32 (0)
 *   record  := chunkIndex u32 | kind u16 | n u16 | payload        (chunkIndex strictly rising)
 *     kind 1, sparse: n entries (1..4096): n x offset u16 (rising, < 4096), zero pad to a
 *                     multiple of 4 bytes, n x value u32 (non-zero)
 *     kind 2, dense:  n = 0; 4096 x value u32 (at least one non-zero)
 *     kind 3, run:    n chunks (1..65535) from chunkIndex, block i of them holding first + step * i:
 *                     first u32 | step u32 (0 or 1; first non-zero; step 1: the last value < ZERO_MARK)
 *   crc32   := zlib crc32 of every byte before it
 * Records describe chunks, not leaves, so the in-memory layout can change without a new version.
 * Example: lba 5 -> 7 and lba 4096..8191 -> 100, 101, ... is header(mappedCount 4097, 2 records),
 * [0, 1, 1, offset 5, pad, value 7] and [1, 3, 1, first 100, step 1], then the crc32. A zeroed
 * 1 TiB is 65536 chunks but only two run records.
 * deserialize() throws EngineError CORRUPTION (UNSUPPORTED_FORMAT for another version).
 *
 * Typed-array reads carry `!` (noUncheckedIndexedAccess): their indices are kept in bounds by
 * the invariants above.
 */

import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import { EngineError } from '../errors.ts';

export const UNMAPPED = 0;
export const ZERO_MARK = 0xffffffff;
/** LBAs are below 2^40: 4 PiB of 4 KiB blocks. */
export const LBA_LIMIT = 2 ** 40;

const CHUNK_SHIFT = 12;
export const CHUNK_BLOCKS = 1 << CHUNK_SHIFT; // 4096 blocks = 16 MiB of volume per chunk
const CHUNK_LIMIT = LBA_LIMIT / CHUNK_BLOCKS; // 2^28 chunk indices
const DIR_SHIFT = 9;
const DIR_SLOTS = 1 << DIR_SHIFT; // a Dir covers 512 chunks = 8 GiB
const DIR_MASK = DIR_SLOTS - 1;
const MID_SHIFT = 2 * DIR_SHIFT; // a Mid covers 512 Dirs = 4 TiB
const TOP_SLOTS = CHUNK_LIMIT >>> MID_SHIFT; // 1024 Mids

const MAX_SPAN_SHIFT = 4; // 16 chunks = 65536 blocks, the widest span whose offsets fit 16 bits
const SPARSE_ENTRY_BYTES = 6; // offset u16 + value u32
const DENSE_DATA_BYTES = CHUNK_BLOCKS * 4;
export const SPARSE_MAX_ENTRIES = Math.floor(DENSE_DATA_BYTES / SPARSE_ENTRY_BYTES); // 2730
export const DENSE_MIN_ENTRIES = Math.ceil(DENSE_DATA_BYTES / 7); // 2341: dense stays <= 7 B/block
const MERGE_MAX_ENTRIES = SPARSE_MAX_ENTRIES >>> 1; // 1365: half full, so a merge is not undone soon
const SPARSE_MIN_CAPACITY = 4;

// Fixed costs for memoryBytes(), measured as described in the module comment.
const SPARSE_LEAF_FIXED_BYTES = 352; // object + ArrayBuffer + two views
const DENSE_LEAF_FIXED_BYTES = 232; // object + ArrayBuffer + one view
const RUN_LEAF_BYTES = 48;
const SLOT_ARRAY_FIXED_BYTES = 88; // a Dir or Mid object and its array header
const SLOT_BYTES = 8; // one pointer

const IMAGE_MAGIC = 0x50414d42; // "BMAP" little-endian
const IMAGE_VERSION = 1;
const IMAGE_HEADER_BYTES = 24;
const IMAGE_TRAILER_BYTES = 4; // crc32
const RECORD_HEADER_BYTES = 8;
const RECORD_SPARSE = 1;
const RECORD_DENSE = 2;
const RECORD_RUN = 3;
const RECORD_RUN_MAX_CHUNKS = 0xffff;

class SparseLeaf {
  readonly kind = 'sparse';
  readonly baseChunk: number;
  readonly spanShift: number;
  count = 0;
  values: Uint32Array;
  offsets: Uint16Array;

  constructor(baseChunk: number, spanShift: number, capacity: number) {
    assert(capacity >= 1 && capacity <= SPARSE_MAX_ENTRIES);
    this.baseChunk = baseChunk;
    this.spanShift = spanShift;
    const buffer = new ArrayBuffer(capacity * SPARSE_ENTRY_BYTES);
    this.values = new Uint32Array(buffer, 0, capacity);
    this.offsets = new Uint16Array(buffer, capacity * 4, capacity);
  }
}

class DenseLeaf {
  readonly kind = 'dense';
  count = 0;
  readonly values = new Uint32Array(CHUNK_BLOCKS);
}

class RunLeaf {
  readonly kind = 'run';
  readonly first: number;
  readonly step: 0 | 1;

  constructor(first: number, step: 0 | 1) {
    assert(first !== UNMAPPED && (step === 0 || first + CHUNK_BLOCKS - 1 < ZERO_MARK));
    this.first = first;
    this.step = step;
  }
}

type Leaf = SparseLeaf | DenseLeaf | RunLeaf;
export type LeafKind = Leaf['kind'];

/** Shared by every chunk that is entirely ZERO_MARK; safe because run leaves never change. */
const ZERO_RUN = new RunLeaf(ZERO_MARK, 0);

class Dir {
  readonly slots: (Leaf | undefined)[] = new Array<Leaf | undefined>(DIR_SLOTS).fill(undefined);
  used = 0;
}

class Mid {
  readonly dirs: (Dir | undefined)[] = new Array<Dir | undefined>(DIR_SLOTS).fill(undefined);
  used = 0;
}

export interface BlockMapStats {
  sparseLeaves: number;
  denseLeaves: number;
  /** Distinct run leaves, plus one per chunk using the shared all-ZERO_MARK leaf. */
  runLeaves: number;
  dirs: number;
}

export interface LeafInfo {
  kind: LeafKind;
  firstLba: number;
  spanBlocks: number;
  count: number;
}

export class BlockMap {
  /** First value of the run found by the last run() call. */
  runValue = UNMAPPED;
  private top: (Mid | undefined)[] = new Array<Mid | undefined>(TOP_SLOTS).fill(undefined);
  private mapped = 0;
  /** Bumped by every mutation; forEach() asserts its callback left it alone. */
  private version = 0;
  private steps = 0;

  get mappedCount(): number {
    return this.mapped;
  }

  /** Pieces (one chunk written, or one leaf trimmed) processed by mutations: a cost meter. */
  get mutationSteps(): number {
    return this.steps;
  }

  get(lba: number): number {
    checkLba(lba);
    const chunk = Math.floor(lba / CHUNK_BLOCKS);
    const leaf = this.slot(chunk);
    return leaf === undefined ? UNMAPPED : leafGet(leaf, chunk, lba - chunk * CHUNK_BLOCKS);
  }

  /** Maps lba to value; UNMAPPED removes the mapping. */
  set(lba: number, value: number): void {
    checkLba(lba);
    checkValue(value);
    this.assign(lba, 1, value, 0);
  }

  /** Maps lba + i to firstValue + i for i < count: one batch landed contiguously. */
  setRun(lba: number, count: number, firstValue: number): void {
    checkRange(lba, count);
    checkValue(firstValue);
    assert(firstValue !== UNMAPPED && firstValue !== ZERO_MARK, 'setRun: first value is reserved');
    assert(count === 0 || firstValue + count - 1 < ZERO_MARK, 'setRun: values would reach ZERO_MARK');
    this.assign(lba, count, firstValue, 1);
  }

  /** Maps every block of [lba, lba + count) to value: UNMAPPED trims, ZERO_MARK zeroes. */
  fill(lba: number, count: number, value: number): void {
    checkRange(lba, count);
    checkValue(value);
    this.assign(lba, count, value, 0);
  }

  /**
   * Length (>= 1, <= maxCount, never past LBA_LIMIT) of the run starting at lba in which every
   * block is UNMAPPED, every block is ZERO_MARK, or the values rise by exactly 1 per block
   * (never reaching ZERO_MARK). The run's first value is left in runValue. No allocation.
   */
  run(lba: number, maxCount: number): number {
    checkLba(lba);
    assert(Number.isInteger(maxCount) && maxCount >= 1, 'run: maxCount must be a positive integer');
    const limit = Math.min(maxCount, LBA_LIMIT - lba);
    const first = this.get(lba);
    this.runValue = first;
    if (first === UNMAPPED) {
      const next = this.findMapped(lba, lba + limit);
      return next < 0 ? limit : next - lba;
    }
    if (first === ZERO_MARK) return this.matchRun(lba, limit, first, 0);
    return this.matchRun(lba, Math.min(limit, ZERO_MARK - first), first, 1);
  }

  /** Smallest mapped lba >= from, or -1. Skips empty directories and chunks wholesale. */
  nextMapped(from: number): number {
    assert(Number.isInteger(from) && from >= 0, 'nextMapped: from must be a non-negative integer');
    return from >= LBA_LIMIT ? -1 : this.findMapped(from, LBA_LIMIT);
  }

  /** Calls fn for each mapped (lba, value) with from <= lba < to, in lba order. fn must not mutate the map. */
  forEach(from: number, to: number, fn: (lba: number, value: number) => void): void {
    if (!(Number.isInteger(from) && from >= 0 && !Number.isNaN(to))) assert.fail(`forEach: bad range [${from}, ${to})`);
    const end = Math.min(to, LBA_LIMIT);
    const version = this.version;
    let pos = from;
    while (pos < end) {
      const chunk = this.nextOccupied(chunkOf(pos), chunkCeil(end));
      if (chunk < 0) return;
      const leaf = this.slot(chunk)!;
      const first = leafBaseChunk(leaf, chunk) * CHUNK_BLOCKS;
      const leafEnd = first + leafSpanBlocks(leaf);
      this.leafForEach(leaf, first, Math.max(pos, first) - first, Math.min(end, leafEnd) - first, fn, version);
      pos = leafEnd;
    }
  }

  /**
   * Estimated bytes held: typed-array bytes plus the measured fixed cost of every leaf, Dir and
   * Mid object and the top array (constants above). The shared ZERO_MARK leaf costs only its
   * slots. O(leaves + directories).
   */
  memoryBytes(): number {
    let bytes = SLOT_ARRAY_FIXED_BYTES + TOP_SLOTS * SLOT_BYTES;
    for (const mid of this.top) {
      if (mid === undefined) continue;
      bytes += SLOT_ARRAY_FIXED_BYTES + DIR_SLOTS * SLOT_BYTES;
      for (const dir of mid.dirs) if (dir !== undefined) bytes += SLOT_ARRAY_FIXED_BYTES + DIR_SLOTS * SLOT_BYTES;
    }
    this.eachLeaf((leaf) => {
      bytes += leafBytes(leaf);
    });
    return bytes;
  }

  stats(): BlockMapStats {
    const stats: BlockMapStats = { sparseLeaves: 0, denseLeaves: 0, runLeaves: 0, dirs: 0 };
    for (const mid of this.top) for (const dir of mid?.dirs ?? []) if (dir !== undefined) stats.dirs++;
    this.eachLeaf((leaf) => {
      if (leaf.kind === 'sparse') stats.sparseLeaves++;
      else if (leaf.kind === 'dense') stats.denseLeaves++;
      else stats.runLeaves++;
    });
    return stats;
  }

  /** The leaf holding lba's chunk, for tests and debugging; allocates. */
  inspect(lba: number): LeafInfo | undefined {
    checkLba(lba);
    const chunk = chunkOf(lba);
    const leaf = this.slot(chunk);
    if (leaf === undefined) return undefined;
    const firstLba = leafBaseChunk(leaf, chunk) * CHUNK_BLOCKS;
    return { kind: leaf.kind, firstLba, spanBlocks: leafSpanBlocks(leaf), count: leafCount(leaf) };
  }

  clear(): void {
    this.top = new Array<Mid | undefined>(TOP_SLOTS).fill(undefined);
    this.mapped = 0;
    this.version++;
  }

  serialize(): Buffer {
    let bytes = IMAGE_HEADER_BYTES + IMAGE_TRAILER_BYTES;
    let records = 0;
    this.eachRecord({
      sparse: (_chunk, _leaf, from, to) => {
        bytes += RECORD_HEADER_BYTES + sparsePayloadBytes(to - from);
        records++;
      },
      dense: () => {
        bytes += RECORD_HEADER_BYTES + DENSE_DATA_BYTES;
        records++;
      },
      run: () => {
        bytes += RECORD_HEADER_BYTES + 8;
        records++;
      },
    });
    const image = Buffer.alloc(bytes);
    writeImageHeader(image, this.mapped, records);
    const end = this.writeRecords(image, IMAGE_HEADER_BYTES);
    assert.equal(end, bytes - IMAGE_TRAILER_BYTES);
    image.writeUInt32LE(crc32(image.subarray(0, end)), end);
    return image;
  }

  /** Inverse of serialize(). Throws EngineError CORRUPTION on any inconsistency. */
  static deserialize(image: Buffer): BlockMap {
    const body = checkImageEnvelope(image);
    const mappedCount = Number(image.readBigUInt64LE(8));
    const records = image.readUInt32LE(16);
    if (image.readUInt32LE(20) !== 0) corrupt('reserved header bytes are not zero');
    const map = new BlockMap();
    let pos = IMAGE_HEADER_BYTES;
    let previousChunk = -1;
    for (let r = 0; r < records; r++) {
      if (pos + RECORD_HEADER_BYTES > body) corrupt(`record ${r} is truncated`);
      const chunk = image.readUInt32LE(pos);
      if (chunk <= previousChunk || chunk >= CHUNK_LIMIT) corrupt(`record ${r} has chunk ${chunk} out of order`);
      const loaded = map.loadRecord(image, pos, body, chunk);
      pos = loaded.next;
      previousChunk = loaded.lastChunk;
    }
    if (pos !== body) corrupt(`${body - pos} bytes after the last record`);
    if (map.mapped !== mappedCount) corrupt(`header says ${mappedCount} mapped blocks, records hold ${map.mapped}`);
    return map;
  }

  /** Checks every invariant in the module comment; O(size). For tests. */
  verify(): void {
    let mapped = 0;
    for (let t = 0; t < TOP_SLOTS; t++) {
      const mid = this.top[t];
      if (mid === undefined) continue;
      let dirs = 0;
      for (let m = 0; m < DIR_SLOTS; m++) {
        const dir = mid.dirs[m];
        if (dir === undefined) continue;
        dirs++;
        mapped += this.verifyDir(dir, (t << MID_SHIFT) + (m << DIR_SHIFT));
      }
      assert.equal(mid.used, dirs, 'Mid.used');
      assert(dirs > 0, 'empty Mid left linked');
    }
    assert.equal(mapped, this.mapped, 'mappedCount');
  }

  // ---- Mutation --------------------------------------------------------------------------

  /** Stores value + step * i at lba + i for i < count; UNMAPPED (step 0) trims. */
  private assign(lba: number, count: number, value: number, step: 0 | 1): void {
    this.version++;
    const end = lba + count;
    let pos = lba;
    while (pos < end) {
      this.steps++;
      if (value === UNMAPPED) {
        pos = this.trimStep(pos, end);
        continue;
      }
      const len = Math.min(end, (chunkOf(pos) + 1) * CHUNK_BLOCKS) - pos;
      this.writeChunkPiece(pos, len, value + step * (pos - lba), step);
      pos += len;
    }
  }

  /** Trims [pos, end) within the next occupied leaf; returns where the trim continues. */
  private trimStep(pos: number, end: number): number {
    const chunk = this.nextOccupied(chunkOf(pos), chunkCeil(end));
    if (chunk < 0) return end;
    const leaf = this.slot(chunk)!;
    const first = leafBaseChunk(leaf, chunk) * CHUNK_BLOCKS;
    const to = Math.min(end, first + leafSpanBlocks(leaf));
    const from = Math.max(pos, first);
    assert(from < to);
    if (leaf.kind === 'sparse') {
      this.sparseRemove(leaf, from - first, to - first);
    } else if (to - from === CHUNK_BLOCKS) {
      this.mapped -= leafCount(leaf);
      this.setSlots(chunk, 1, undefined);
    } else {
      const dense = leaf.kind === 'dense' ? leaf : this.expandRun(leaf, chunk);
      this.denseStore(dense, chunk, from - first, to - from, UNMAPPED, 0);
    }
    return to;
  }

  /** Writes len (<= chunk end) non-UNMAPPED values at pos, restructuring the leaf as needed. */
  private writeChunkPiece(pos: number, len: number, value: number, step: 0 | 1): void {
    const chunk = chunkOf(pos);
    const offset = pos - chunk * CHUNK_BLOCKS;
    if (len === CHUNK_BLOCKS) {
      this.putRunLeaf(chunk, value, step);
      return;
    }
    // Each retry follows a split (at most MAX_SPAN_SHIFT), a conversion to dense or an expansion.
    for (let attempt = 0; attempt <= MAX_SPAN_SHIFT + 2; attempt++) {
      const leaf = this.slot(chunk) ?? this.newLeaf(chunk, len);
      switch (leaf.kind) {
        case 'sparse':
          if (this.sparseStore(leaf, relOffset(leaf, chunk, offset), len, value, step)) return;
          if (leaf.spanShift > 0) this.split(leaf);
          else this.toDense(leaf, chunk);
          break;
        case 'dense':
          this.denseStore(leaf, chunk, offset, len, value, step);
          return;
        case 'run':
          this.expandRun(leaf, chunk);
          break;
        default:
          return unreachable(leaf);
      }
    }
    assert.fail('BlockMap: a chunk write did not settle');
  }

  private newLeaf(chunk: number, len: number): Leaf {
    if (len > SPARSE_MAX_ENTRIES) {
      const dense = new DenseLeaf();
      this.setSlots(chunk, 1, dense);
      return dense;
    }
    let shift = MAX_SPAN_SHIFT;
    while (shift > 0 && !this.spanIsEmpty(alignDown(chunk, shift), 1 << shift)) shift--;
    const leaf = new SparseLeaf(alignDown(chunk, shift), shift, capacityFor(len));
    this.setSlots(leaf.baseChunk, 1 << shift, leaf);
    return leaf;
  }

  private putRunLeaf(chunk: number, value: number, step: 0 | 1): void {
    let old = this.slot(chunk);
    while (old !== undefined && old.kind === 'sparse' && old.spanShift > 0) {
      this.split(old);
      old = this.slot(chunk);
    }
    if (old !== undefined) this.mapped -= leafCount(old);
    this.setSlots(chunk, 1, value === ZERO_MARK && step === 0 ? ZERO_RUN : new RunLeaf(value, step));
    this.mapped += CHUNK_BLOCKS;
  }

  /** Stores len entries at leaf offset rel; false (and no change) if the leaf would overflow. */
  private sparseStore(leaf: SparseLeaf, rel: number, len: number, value: number, step: 0 | 1): boolean {
    const lo = lowerBound(leaf.offsets, 0, leaf.count, rel);
    const hi = lowerBound(leaf.offsets, lo, leaf.count, rel + len);
    const count = leaf.count - (hi - lo) + len;
    if (count > SPARSE_MAX_ENTRIES) return false;
    if (count > leaf.values.length) resizeSparse(leaf, capacityFor(count));
    if (hi - lo !== len) {
      leaf.values.copyWithin(lo + len, hi, leaf.count);
      leaf.offsets.copyWithin(lo + len, hi, leaf.count);
    }
    for (let i = 0; i < len; i++) {
      leaf.offsets[lo + i] = rel + i;
      leaf.values[lo + i] = value + step * i;
    }
    this.mapped += count - leaf.count;
    leaf.count = count;
    return true;
  }

  private sparseRemove(leaf: SparseLeaf, relFrom: number, relTo: number): void {
    const lo = lowerBound(leaf.offsets, 0, leaf.count, relFrom);
    const hi = lowerBound(leaf.offsets, lo, leaf.count, relTo);
    if (lo === hi) return;
    leaf.values.copyWithin(lo, hi, leaf.count);
    leaf.offsets.copyWithin(lo, hi, leaf.count);
    leaf.count -= hi - lo;
    this.mapped -= hi - lo;
    if (leaf.count === 0) {
      this.setSlots(leaf.baseChunk, 1 << leaf.spanShift, undefined);
      return;
    }
    // Shrink once a quarter of the capacity is idle; the new capacity leaves 1/8 spare.
    if (leaf.count + (leaf.count >>> 2) + SPARSE_MIN_CAPACITY < leaf.values.length) {
      resizeSparse(leaf, capacityFor(leaf.count));
    }
    this.tryMerge(leaf);
  }

  private denseStore(leaf: DenseLeaf, chunk: number, offset: number, len: number, value: number, step: 0 | 1): void {
    const values = leaf.values;
    const wasFull = leaf.count === CHUNK_BLOCKS;
    let count = leaf.count;
    for (let i = 0; i < len; i++) {
      const next = value + step * i;
      count += (next !== UNMAPPED ? 1 : 0) - (values[offset + i] !== UNMAPPED ? 1 : 0);
      values[offset + i] = next;
    }
    this.mapped += count - leaf.count;
    leaf.count = count;
    if (count === 0) this.setSlots(chunk, 1, undefined);
    else if (count < DENSE_MIN_ENTRIES) this.toSparse(leaf, chunk);
    else if (count === CHUNK_BLOCKS && (!wasFull || offset + len === CHUNK_BLOCKS)) this.tryRunLeaf(leaf, chunk);
  }

  // ---- Leaf transitions ------------------------------------------------------------------

  /** Replaces a sparse leaf by its two halves (an empty half leaves its slots empty). */
  private split(leaf: SparseLeaf): void {
    assert(leaf.spanShift > 0 && leaf.count > 0);
    const shift = leaf.spanShift - 1;
    const halfRel = (1 << shift) * CHUNK_BLOCKS;
    const middle = lowerBound(leaf.offsets, 0, leaf.count, halfRel);
    this.placeSlice(leaf, 0, middle, leaf.baseChunk, shift, 0);
    this.placeSlice(leaf, middle, leaf.count, leaf.baseChunk + (1 << shift), shift, halfRel);
  }

  /** Installs entries [from, to) of src as a leaf at baseChunk, offsets lowered by relShift. */
  private placeSlice(src: SparseLeaf, from: number, to: number, baseChunk: number, shift: number, relShift: number): void {
    if (from === to) {
      this.setSlots(baseChunk, 1 << shift, undefined);
      return;
    }
    const leaf = new SparseLeaf(baseChunk, shift, capacityFor(to - from));
    copySparse(src, from, to, leaf, 0, -relShift);
    this.setSlots(baseChunk, 1 << shift, leaf);
  }

  /** Joins a small sparse leaf with its buddy span while the result stays small. */
  private tryMerge(start: SparseLeaf): void {
    let leaf = start;
    while (leaf.spanShift < MAX_SPAN_SHIFT && leaf.count <= MERGE_MAX_ENTRIES) {
      const span = 1 << leaf.spanShift;
      const parent = alignDown(leaf.baseChunk, leaf.spanShift + 1);
      const buddyBase = parent === leaf.baseChunk ? parent + span : parent;
      const buddy = this.soleOccupant(buddyBase, span);
      if (buddy === null) return;
      if (buddy !== undefined) {
        if (buddy.kind !== 'sparse' || buddy.spanShift !== leaf.spanShift) return;
        if (leaf.count + buddy.count > MERGE_MAX_ENTRIES) return;
      }
      const lower = parent === leaf.baseChunk ? leaf : buddy;
      const upper = parent === leaf.baseChunk ? buddy : leaf;
      leaf = this.join(parent, leaf.spanShift + 1, lower, upper);
    }
  }

  private join(baseChunk: number, shift: number, lower: SparseLeaf | undefined, upper: SparseLeaf | undefined): SparseLeaf {
    const lowerCount = lower?.count ?? 0;
    const leaf = new SparseLeaf(baseChunk, shift, capacityFor(lowerCount + (upper?.count ?? 0)));
    if (lower !== undefined) copySparse(lower, 0, lower.count, leaf, 0, 0);
    if (upper !== undefined) copySparse(upper, 0, upper.count, leaf, lowerCount, (1 << (shift - 1)) * CHUNK_BLOCKS);
    this.setSlots(baseChunk, 1 << shift, leaf);
    return leaf;
  }

  private toDense(leaf: SparseLeaf, chunk: number): void {
    assert(leaf.spanShift === 0 && leaf.baseChunk === chunk);
    const dense = new DenseLeaf();
    for (let i = 0; i < leaf.count; i++) dense.values[leaf.offsets[i]!] = leaf.values[i]!;
    dense.count = leaf.count;
    this.setSlots(chunk, 1, dense);
  }

  private toSparse(dense: DenseLeaf, chunk: number): void {
    const leaf = new SparseLeaf(chunk, 0, capacityFor(dense.count));
    for (let offset = 0; offset < CHUNK_BLOCKS; offset++) {
      const value = dense.values[offset]!;
      if (value === UNMAPPED) continue;
      leaf.offsets[leaf.count] = offset;
      leaf.values[leaf.count++] = value;
    }
    assert.equal(leaf.count, dense.count);
    this.setSlots(chunk, 1, leaf);
    this.tryMerge(leaf);
  }

  private expandRun(run: RunLeaf, chunk: number): DenseLeaf {
    const dense = new DenseLeaf();
    for (let offset = 0; offset < CHUNK_BLOCKS; offset++) dense.values[offset] = run.first + run.step * offset;
    dense.count = CHUNK_BLOCKS;
    this.setSlots(chunk, 1, dense);
    return dense;
  }

  private tryRunLeaf(dense: DenseLeaf, chunk: number): void {
    const values = dense.values;
    const first = values[0]!;
    const step = values[1]! - first;
    if (step !== 0 && step !== 1) return;
    if (step === 1 && first > ZERO_MARK - CHUNK_BLOCKS) return;
    for (let offset = 2; offset < CHUNK_BLOCKS; offset++) if (values[offset] !== first + step * offset) return;
    this.setSlots(chunk, 1, first === ZERO_MARK && step === 0 ? ZERO_RUN : new RunLeaf(first, step));
  }

  // ---- Directory -------------------------------------------------------------------------

  private slot(chunk: number): Leaf | undefined {
    const mid = this.top[chunk >>> MID_SHIFT];
    if (mid === undefined) return undefined;
    const dir = mid.dirs[(chunk >>> DIR_SHIFT) & DIR_MASK];
    return dir === undefined ? undefined : dir.slots[chunk & DIR_MASK];
  }

  private dirOf(chunk: number): Dir | undefined {
    return this.top[chunk >>> MID_SHIFT]?.dirs[(chunk >>> DIR_SHIFT) & DIR_MASK];
  }

  private dirFor(chunk: number): Dir {
    let mid = this.top[chunk >>> MID_SHIFT];
    if (mid === undefined) {
      mid = new Mid();
      this.top[chunk >>> MID_SHIFT] = mid;
    }
    const m = (chunk >>> DIR_SHIFT) & DIR_MASK;
    let dir = mid.dirs[m];
    if (dir === undefined) {
      dir = new Dir();
      mid.dirs[m] = dir;
      mid.used++;
    }
    return dir;
  }

  /** Points slots [baseChunk, baseChunk + n) at leaf; n never crosses a Dir (spans are aligned). */
  private setSlots(baseChunk: number, n: number, leaf: Leaf | undefined): void {
    const dir = leaf === undefined ? this.dirOf(baseChunk) : this.dirFor(baseChunk);
    if (dir === undefined) return;
    const first = baseChunk & DIR_MASK;
    assert(first + n <= DIR_SLOTS);
    for (let s = first; s < first + n; s++) {
      dir.used += (leaf !== undefined ? 1 : 0) - (dir.slots[s] !== undefined ? 1 : 0);
      dir.slots[s] = leaf;
    }
    if (dir.used > 0) return;
    const mid = this.top[baseChunk >>> MID_SHIFT]!;
    mid.dirs[(baseChunk >>> DIR_SHIFT) & DIR_MASK] = undefined;
    if (--mid.used === 0) this.top[baseChunk >>> MID_SHIFT] = undefined;
  }

  private spanIsEmpty(baseChunk: number, n: number): boolean {
    return this.soleOccupant(baseChunk, n) === undefined;
  }

  /** The one leaf filling slots [baseChunk, +n), undefined if all are empty, null if mixed. */
  private soleOccupant(baseChunk: number, n: number): Leaf | undefined | null {
    const dir = this.dirOf(baseChunk);
    if (dir === undefined) return undefined;
    const first = baseChunk & DIR_MASK;
    const leaf = dir.slots[first];
    for (let s = first + 1; s < first + n; s++) if (dir.slots[s] !== leaf) return null;
    return leaf;
  }

  /** First occupied chunk in [chunk, endChunk), or -1; skips empty Mids and Dirs whole. */
  private nextOccupied(chunk: number, endChunk: number): number {
    let cur = chunk;
    while (cur < endChunk) {
      const mid = this.top[cur >>> MID_SHIFT];
      if (mid === undefined) {
        cur = ((cur >>> MID_SHIFT) + 1) << MID_SHIFT;
        continue;
      }
      const dir = mid.dirs[(cur >>> DIR_SHIFT) & DIR_MASK];
      if (dir !== undefined) {
        for (let s = cur & DIR_MASK; s < DIR_SLOTS; s++) {
          if (dir.slots[s] === undefined) continue;
          const found = cur - (cur & DIR_MASK) + s;
          return found < endChunk ? found : -1;
        }
      }
      cur = ((cur >>> DIR_SHIFT) + 1) << DIR_SHIFT;
    }
    return -1;
  }

  /** Calls visit once per leaf in lba order (once per chunk for the shared ZERO_MARK leaf). */
  private eachLeaf(visit: (leaf: Leaf, baseChunk: number) => void): void {
    let chunk = this.nextOccupied(0, CHUNK_LIMIT);
    while (chunk >= 0) {
      const leaf = this.slot(chunk)!;
      const base = leafBaseChunk(leaf, chunk);
      visit(leaf, base);
      chunk = this.nextOccupied(base + leafSpanChunks(leaf), CHUNK_LIMIT);
    }
  }

  // ---- Reading ---------------------------------------------------------------------------

  /** Length of the run of first + step * i from lba, at most limit; limit >= 1 and lba mapped. */
  private matchRun(lba: number, limit: number, first: number, step: 0 | 1): number {
    let matched = 0;
    while (matched < limit) {
      const pos = lba + matched;
      const chunk = chunkOf(pos);
      const leaf = this.slot(chunk);
      if (leaf === undefined) break;
      const offset = pos - chunk * CHUNK_BLOCKS;
      const want = Math.min(limit - matched, CHUNK_BLOCKS - offset);
      const n = leafMatch(leaf, chunk, offset, want, first + step * matched, step);
      matched += n;
      if (n < want) break;
    }
    assert(matched >= 1);
    return matched;
  }

  /** First mapped lba in [from, end), or -1. */
  private findMapped(from: number, end: number): number {
    let pos = from;
    while (pos < end) {
      const chunk = this.nextOccupied(chunkOf(pos), chunkCeil(end));
      if (chunk < 0) return -1;
      const leaf = this.slot(chunk)!;
      const first = leafBaseChunk(leaf, chunk) * CHUNK_BLOCKS;
      const leafEnd = first + leafSpanBlocks(leaf);
      const found = leafFindMapped(leaf, Math.max(pos, first) - first, Math.min(end, leafEnd) - first);
      if (found >= 0) return first + found;
      pos = leafEnd;
    }
    return -1;
  }

  private leafForEach(
    leaf: Leaf,
    firstLba: number,
    relFrom: number,
    relTo: number,
    fn: (lba: number, value: number) => void,
    version: number,
  ): void {
    switch (leaf.kind) {
      case 'sparse':
        for (let i = lowerBound(leaf.offsets, 0, leaf.count, relFrom); i < leaf.count; i++) {
          const rel = leaf.offsets[i]!;
          if (rel >= relTo) break;
          fn(firstLba + rel, leaf.values[i]!);
          if (this.version !== version) assert.fail('BlockMap mutated during forEach');
        }
        return;
      case 'dense':
      case 'run':
        for (let rel = relFrom; rel < relTo; rel++) {
          const value = leafGet(leaf, 0, rel);
          if (value === UNMAPPED) continue;
          fn(firstLba + rel, value);
          if (this.version !== version) assert.fail('BlockMap mutated during forEach');
        }
        return;
      default:
        unreachable(leaf);
    }
  }

  // ---- Checkpoint image ------------------------------------------------------------------

  /** Calls the visitor for each record in chunk order (serialize's two passes share it). */
  private eachRecord(visitor: RecordVisitor): void {
    const pending: PendingRun = { chunk: -1, chunks: 0, first: 0, step: 0 };
    const flush = (): void => {
      if (pending.chunks > 0) visitor.run(pending.chunk, pending.chunks, pending.first, pending.step);
      pending.chunks = 0;
    };
    this.eachLeaf((leaf, baseChunk) => {
      if (leaf.kind === 'run') {
        if (!continuesRun(pending, baseChunk, leaf)) {
          flush();
          pending.chunk = baseChunk;
          pending.first = leaf.first;
          pending.step = leaf.step;
        }
        pending.chunks++;
        return;
      }
      flush();
      if (leaf.kind === 'sparse') forEachChunkSlice(leaf, (chunk, from, to) => visitor.sparse(chunk, leaf, from, to));
      else visitor.dense(baseChunk, leaf);
    });
    flush();
  }

  private writeRecords(image: Buffer, start: number): number {
    let pos = start;
    this.eachRecord({
      sparse: (chunk, leaf, from, to) => {
        pos = writeRecordHeader(image, pos, chunk, RECORD_SPARSE, to - from);
        const chunkRel = (chunk - leaf.baseChunk) * CHUNK_BLOCKS;
        for (let i = from; i < to; i++) pos = image.writeUInt16LE(leaf.offsets[i]! - chunkRel, pos);
        pos = align4(pos);
        for (let i = from; i < to; i++) pos = image.writeUInt32LE(leaf.values[i]!, pos);
      },
      dense: (chunk, leaf) => {
        pos = writeRecordHeader(image, pos, chunk, RECORD_DENSE, 0);
        for (const value of leaf.values) pos = image.writeUInt32LE(value, pos);
      },
      run: (chunk, chunks, first, step) => {
        pos = writeRecordHeader(image, pos, chunk, RECORD_RUN, chunks);
        pos = image.writeUInt32LE(first, pos);
        pos = image.writeUInt32LE(step, pos);
      },
    });
    return pos;
  }

  /** Validates and applies the record at pos; returns the position after it. */
  private loadRecord(image: Buffer, pos: number, body: number, chunk: number): { next: number; lastChunk: number } {
    const kind = image.readUInt16LE(pos + 4);
    const n = image.readUInt16LE(pos + 6);
    const payload = pos + RECORD_HEADER_BYTES;
    switch (kind) {
      case RECORD_SPARSE:
        return { next: this.loadSparse(image, payload, body, chunk, n), lastChunk: chunk };
      case RECORD_DENSE:
        if (n !== 0 || payload + DENSE_DATA_BYTES > body) corrupt(`dense record for chunk ${chunk} is malformed`);
        this.loadDense(image, payload, chunk);
        return { next: payload + DENSE_DATA_BYTES, lastChunk: chunk };
      case RECORD_RUN:
        if (payload + 8 > body) corrupt(`run record for chunk ${chunk} is truncated`);
        this.loadRun(image.readUInt32LE(payload), image.readUInt32LE(payload + 4), chunk, n);
        return { next: payload + 8, lastChunk: chunk + n - 1 };
      default:
        return corrupt(`record for chunk ${chunk} has unknown kind ${kind}`);
    }
  }

  private loadSparse(image: Buffer, payload: number, body: number, chunk: number, n: number): number {
    if (n < 1 || n > CHUNK_BLOCKS || payload + sparsePayloadBytes(n) > body) {
      corrupt(`sparse record for chunk ${chunk} has a bad length`);
    }
    const valuesAt = align4(payload + 2 * n);
    if (valuesAt !== payload + 2 * n && image.readUInt16LE(payload + 2 * n) !== 0) corrupt('sparse record padding is not zero');
    let previous = -1;
    for (let i = 0; i < n; i++) {
      const offset = image.readUInt16LE(payload + 2 * i);
      const value = image.readUInt32LE(valuesAt + 4 * i);
      if (offset <= previous || offset >= CHUNK_BLOCKS) corrupt(`sparse record for chunk ${chunk} has offsets out of order`);
      if (value === UNMAPPED) corrupt(`sparse record for chunk ${chunk} stores a hole`);
      this.set(chunk * CHUNK_BLOCKS + offset, value);
      previous = offset;
    }
    return valuesAt + 4 * n;
  }

  /** Installs a dense record directly: a chunk of random blocks must not cost 4096 set() calls. */
  private loadDense(image: Buffer, payload: number, chunk: number): void {
    const dense = new DenseLeaf();
    for (let offset = 0; offset < CHUNK_BLOCKS; offset++) {
      const value = image.readUInt32LE(payload + 4 * offset);
      dense.values[offset] = value;
      if (value !== UNMAPPED) dense.count++;
    }
    if (dense.count === 0) corrupt(`dense record for chunk ${chunk} is empty`);
    this.version++;
    this.clearChunkForLoad(chunk);
    this.setSlots(chunk, 1, dense);
    this.mapped += dense.count;
    if (dense.count < DENSE_MIN_ENTRIES) this.toSparse(dense, chunk);
    else if (dense.count === CHUNK_BLOCKS) this.tryRunLeaf(dense, chunk);
  }

  private loadRun(first: number, step: number, chunk: number, chunks: number): void {
    const blocks = chunks * CHUNK_BLOCKS;
    if (chunks < 1 || chunk + chunks > CHUNK_LIMIT) corrupt(`run record for chunk ${chunk} covers ${chunks} chunks`);
    if (step !== 0 && step !== 1) corrupt(`run record for chunk ${chunk} has step ${step}`);
    if (first === UNMAPPED) corrupt(`run record for chunk ${chunk} stores a hole`);
    if (step === 1 && first + blocks - 1 >= ZERO_MARK) corrupt(`run record for chunk ${chunk} reaches ZERO_MARK`);
    if (step === 1) this.setRun(chunk * CHUNK_BLOCKS, blocks, first);
    else this.fill(chunk * CHUNK_BLOCKS, blocks, first);
  }

  /** Records come in chunk order, so a wide sparse leaf over this chunk holds nothing in it. */
  private clearChunkForLoad(chunk: number): void {
    let leaf = this.slot(chunk);
    while (leaf !== undefined && leaf.kind === 'sparse' && leaf.spanShift > 0) {
      this.split(leaf);
      leaf = this.slot(chunk);
    }
    assert(leaf === undefined, 'chunk loaded twice');
  }

  private verifyDir(dir: Dir, firstChunk: number): number {
    let used = 0;
    let mapped = 0;
    for (let s = 0; s < DIR_SLOTS; s++) {
      const leaf = dir.slots[s];
      if (leaf === undefined) continue;
      used++;
      const chunk = firstChunk + s;
      const base = leafBaseChunk(leaf, chunk);
      assert(chunk >= base && chunk < base + leafSpanChunks(leaf), 'slot outside its leaf span');
      if (base !== chunk) continue; // the whole leaf is checked at its first slot
      verifyLeaf(leaf);
      assert(this.soleOccupant(base, leafSpanChunks(leaf)) === leaf, 'leaf does not fill its span');
      mapped += leafCount(leaf);
    }
    assert.equal(dir.used, used, 'Dir.used');
    assert(used > 0, 'empty Dir left linked');
    return mapped;
  }
}

/** A run record being accumulated by serialize(): chunks run leaves that continue each other. */
interface PendingRun {
  chunk: number;
  chunks: number;
  first: number;
  step: 0 | 1;
}

interface RecordVisitor {
  sparse(chunk: number, leaf: SparseLeaf, from: number, to: number): void;
  dense(chunk: number, leaf: DenseLeaf): void;
  /** chunks consecutive run leaves continuing one another, as one record. */
  run(chunk: number, chunks: number, first: number, step: 0 | 1): void;
}

// ---- Leaf helpers ----------------------------------------------------------------------------

function leafGet(leaf: Leaf, chunk: number, offset: number): number {
  switch (leaf.kind) {
    case 'sparse': {
      const rel = relOffset(leaf, chunk, offset);
      const i = lowerBound(leaf.offsets, 0, leaf.count, rel);
      return i < leaf.count && leaf.offsets[i] === rel ? leaf.values[i]! : UNMAPPED;
    }
    case 'dense':
      return leaf.values[offset]!;
    case 'run':
      return leaf.first + leaf.step * offset;
    default:
      return unreachable(leaf);
  }
}

/** How many of the n blocks from offset hold expected + step * i; stays within the chunk. */
function leafMatch(leaf: Leaf, chunk: number, offset: number, n: number, expected: number, step: 0 | 1): number {
  switch (leaf.kind) {
    case 'sparse': {
      const rel = relOffset(leaf, chunk, offset);
      const i = lowerBound(leaf.offsets, 0, leaf.count, rel);
      let k = 0;
      while (k < n && i + k < leaf.count && leaf.offsets[i + k] === rel + k && leaf.values[i + k] === expected + step * k) k++;
      return k;
    }
    case 'dense': {
      let k = 0;
      while (k < n && leaf.values[offset + k] === expected + step * k) k++;
      return k;
    }
    case 'run':
      if (leaf.first + leaf.step * offset !== expected) return 0;
      return leaf.step === step ? n : 1;
    default:
      return unreachable(leaf);
  }
}

/** First mapped leaf-relative offset in [relFrom, relTo), or -1. */
function leafFindMapped(leaf: Leaf, relFrom: number, relTo: number): number {
  switch (leaf.kind) {
    case 'sparse': {
      const i = lowerBound(leaf.offsets, 0, leaf.count, relFrom);
      return i < leaf.count && leaf.offsets[i]! < relTo ? leaf.offsets[i]! : -1;
    }
    case 'dense':
      for (let rel = relFrom; rel < relTo; rel++) if (leaf.values[rel] !== UNMAPPED) return rel;
      return -1;
    case 'run':
      return relFrom < relTo ? relFrom : -1;
    default:
      return unreachable(leaf);
  }
}

function leafBaseChunk(leaf: Leaf, chunk: number): number {
  return leaf.kind === 'sparse' ? leaf.baseChunk : chunk;
}

function leafSpanChunks(leaf: Leaf): number {
  return leaf.kind === 'sparse' ? 1 << leaf.spanShift : 1;
}

function leafSpanBlocks(leaf: Leaf): number {
  return leafSpanChunks(leaf) * CHUNK_BLOCKS;
}

function leafCount(leaf: Leaf): number {
  return leaf.kind === 'run' ? CHUNK_BLOCKS : leaf.count;
}

function leafBytes(leaf: Leaf): number {
  switch (leaf.kind) {
    case 'sparse':
      return SPARSE_LEAF_FIXED_BYTES + leaf.values.length * SPARSE_ENTRY_BYTES;
    case 'dense':
      return DENSE_LEAF_FIXED_BYTES + DENSE_DATA_BYTES;
    case 'run':
      return leaf === ZERO_RUN ? 0 : RUN_LEAF_BYTES;
    default:
      return unreachable(leaf);
  }
}

function verifyLeaf(leaf: Leaf): void {
  switch (leaf.kind) {
    case 'sparse': {
      assert(leaf.count >= 1 && leaf.count <= SPARSE_MAX_ENTRIES && leaf.count <= leaf.values.length, 'sparse count');
      assert.equal(alignDown(leaf.baseChunk, leaf.spanShift), leaf.baseChunk, 'sparse span alignment');
      const span = (1 << leaf.spanShift) * CHUNK_BLOCKS;
      let previous = -1;
      for (let i = 0; i < leaf.count; i++) {
        const offset = leaf.offsets[i]!;
        if (offset <= previous || offset >= span) assert.fail(`sparse offsets out of order at ${i}`);
        if (leaf.values[i] === UNMAPPED) assert.fail(`sparse leaf stores a hole at ${i}`);
        previous = offset;
      }
      return;
    }
    case 'dense': {
      let count = 0;
      for (let offset = 0; offset < CHUNK_BLOCKS; offset++) if (leaf.values[offset] !== UNMAPPED) count++;
      assert.equal(leaf.count, count, 'dense count');
      assert(count >= DENSE_MIN_ENTRIES, 'dense leaf below DENSE_MIN_ENTRIES');
      return;
    }
    case 'run':
      assert(leaf.first !== UNMAPPED && (leaf.step === 0 || leaf.first + CHUNK_BLOCKS - 1 < ZERO_MARK), 'run leaf');
      return;
    default:
      unreachable(leaf);
  }
}

function relOffset(leaf: SparseLeaf, chunk: number, offset: number): number {
  return (chunk - leaf.baseChunk) * CHUNK_BLOCKS + offset;
}

/** Index of the first of offsets[from..to) that is >= key (to if none). */
function lowerBound(offsets: Uint16Array, from: number, to: number, key: number): number {
  let lo = from;
  let hi = to;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (offsets[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function capacityFor(count: number): number {
  return Math.min(SPARSE_MAX_ENTRIES, Math.max(SPARSE_MIN_CAPACITY, count + (count >>> 3)));
}

function resizeSparse(leaf: SparseLeaf, capacity: number): void {
  assert(capacity >= leaf.count && capacity <= SPARSE_MAX_ENTRIES);
  const buffer = new ArrayBuffer(capacity * SPARSE_ENTRY_BYTES);
  const values = new Uint32Array(buffer, 0, capacity);
  const offsets = new Uint16Array(buffer, capacity * 4, capacity);
  values.set(leaf.values.subarray(0, leaf.count));
  offsets.set(leaf.offsets.subarray(0, leaf.count));
  leaf.values = values;
  leaf.offsets = offsets;
}

/** Appends src entries [from, to) at dst index at, adding relDelta to each offset. */
function copySparse(src: SparseLeaf, from: number, to: number, dst: SparseLeaf, at: number, relDelta: number): void {
  assert(at === dst.count && at + (to - from) <= dst.values.length);
  dst.values.set(src.values.subarray(from, to), at);
  for (let i = from; i < to; i++) dst.offsets[at + i - from] = src.offsets[i]! + relDelta;
  dst.count += to - from;
}

/** Calls fn(chunk, from, to) for each chunk of a sparse leaf with entries [from, to) in it. */
function forEachChunkSlice(leaf: SparseLeaf, fn: (chunk: number, from: number, to: number) => void): void {
  let from = 0;
  while (from < leaf.count) {
    const chunkInLeaf = leaf.offsets[from]! >>> CHUNK_SHIFT;
    const to = lowerBound(leaf.offsets, from, leaf.count, (chunkInLeaf + 1) * CHUNK_BLOCKS);
    fn(leaf.baseChunk + chunkInLeaf, from, to);
    from = to;
  }
}

// ---- Image helpers ---------------------------------------------------------------------------

/** Whether the run leaf at chunk extends the pending run record by one chunk. */
function continuesRun(pending: PendingRun, chunk: number, leaf: RunLeaf): boolean {
  if (pending.chunks === 0 || pending.chunks === RECORD_RUN_MAX_CHUNKS) return false;
  if (chunk !== pending.chunk + pending.chunks || leaf.step !== pending.step) return false;
  return leaf.first === pending.first + pending.step * pending.chunks * CHUNK_BLOCKS;
}

function sparsePayloadBytes(n: number): number {
  return align4(2 * n) + 4 * n;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function writeImageHeader(image: Buffer, mappedCount: number, records: number): void {
  image.writeUInt32LE(IMAGE_MAGIC, 0);
  image.writeUInt16LE(IMAGE_VERSION, 4);
  image.writeUInt16LE(0, 6);
  image.writeBigUInt64LE(BigInt(mappedCount), 8);
  image.writeUInt32LE(records, 16);
  image.writeUInt32LE(0, 20);
}

function writeRecordHeader(image: Buffer, pos: number, chunk: number, kind: number, n: number): number {
  image.writeUInt32LE(chunk, pos);
  image.writeUInt16LE(kind, pos + 4);
  return image.writeUInt16LE(n, pos + 6);
}

/** Checks length, magic, version and checksum; returns where the records end. */
function checkImageEnvelope(image: Buffer): number {
  if (image.length < IMAGE_HEADER_BYTES + IMAGE_TRAILER_BYTES) corrupt(`image of ${image.length} bytes is too short`);
  if (image.readUInt32LE(0) !== IMAGE_MAGIC) corrupt('bad magic');
  const version = image.readUInt16LE(4);
  if (version !== IMAGE_VERSION) {
    throw new EngineError('UNSUPPORTED_FORMAT', `block map image version ${version}; this build reads ${IMAGE_VERSION}`);
  }
  if (image.readUInt16LE(6) !== 0) corrupt('reserved header bytes are not zero');
  const body = image.length - IMAGE_TRAILER_BYTES;
  if (crc32(image.subarray(0, body)) !== image.readUInt32LE(body)) corrupt('checksum mismatch');
  return body;
}

function corrupt(detail: string): never {
  throw new EngineError('CORRUPTION', `block map image: ${detail}`);
}

// ---- Argument checks (programmer errors: the engine validated the request already) -----------

function checkLba(lba: number): void {
  if (!(Number.isInteger(lba) && lba >= 0 && lba < LBA_LIMIT)) assert.fail(`lba ${lba} outside [0, 2^40)`);
}

function checkValue(value: number): void {
  if (value >>> 0 !== value) assert.fail(`value ${value} is not a uint32`);
}

function checkRange(lba: number, count: number): void {
  if (!(Number.isInteger(lba) && Number.isInteger(count) && lba >= 0 && count >= 0 && lba + count <= LBA_LIMIT)) {
    assert.fail(`range [${lba}, +${count}) outside [0, 2^40)`);
  }
}

function chunkOf(lba: number): number {
  return Math.floor(lba / CHUNK_BLOCKS);
}

function chunkCeil(lba: number): number {
  return Math.ceil(lba / CHUNK_BLOCKS);
}

function alignDown(chunk: number, shift: number): number {
  return (chunk >>> shift) << shift;
}

function unreachable(value: never): never {
  throw new Error(`unreachable: ${String(value)}`);
}
