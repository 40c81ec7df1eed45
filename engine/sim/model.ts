/**
 * The simulation's model of every volume and snapshot, per 4 KiB block:
 *
 *   durable  the value covered by the last completed flush (or found on the medium by the
 *            last recovery after a power cut)
 *   after    the values logged to the block since, oldest first; the last one is what a read
 *            must return now
 *
 * After a power cut a block may hold `durable` or any value of `after`, nothing else: never an
 * older value (a flushed byte lost), never another block's or volume's data, never damaged
 * bytes. A snapshot's blocks never have an `after`, so any change to one is caught too.
 *
 * The model mirrors the engine's block semantics: an unaligned write rewrites its edge blocks
 * whole (read-modify-write), a trim zeroes only the whole blocks inside its range, a
 * write-zeroes writes zeros into its partial edge blocks and zeroes the whole ones.
 */
import { crc32 } from 'node:zlib';
import { BLOCK_BYTES, ZERO_BLOCK } from './block-data.ts';

export interface BlockState {
  durable: Buffer;
  after: Buffer[];
}

export interface BlockChange {
  lba: number;
  value: Buffer;
}

export type ExportKind = 'volume' | 'snapshot';

export class ExportModel {
  readonly name: string;
  readonly kind: ExportKind;
  blocks: BlockState[];
  /** Present in the running pool (reads and writes reach it). */
  live: boolean;
  /** Whether recovery must find it ('yes') or may ('maybe': a management call failed midway). */
  onDisk: 'yes' | 'maybe';
  /** Block counts recovery may find (more than one after a failed resize). */
  sizesOnDisk: Set<number>;
  /** Fixed by a snapshot that was acknowledged: its content must never change. */
  readonly immutable: boolean;

  constructor(init: { name: string; kind: ExportKind; blocks: BlockState[]; live: boolean; onDisk: 'yes' | 'maybe'; immutable: boolean }) {
    this.name = init.name;
    this.kind = init.kind;
    this.blocks = init.blocks;
    this.live = init.live;
    this.onDisk = init.onDisk;
    this.sizesOnDisk = new Set([init.blocks.length]);
    this.immutable = init.immutable;
  }

  get sizeBytes(): number {
    return this.blocks.length * BLOCK_BYTES;
  }
}

export function currentValue(b: BlockState): Buffer {
  return b.after.at(-1) ?? b.durable;
}

/** Every value the block may hold after a power cut. */
export function allowedValues(b: BlockState): Buffer[] {
  return [b.durable, ...b.after];
}

function zeroBlocks(n: number): BlockState[] {
  return Array.from({ length: n }, () => ({ durable: ZERO_BLOCK, after: [] }));
}

/** How a restarted pool's content relates to the medium. */
export type RecoveryKind =
  /** After a power cut: everything found was on the medium, so it is the new durable state. */
  | 'medium'
  /** After a process restart: found in the page cache, maybe not yet on the medium. */
  | 'pageCache';

export class Model {
  readonly exports = new Map<string, ExportModel>();
  /** The step being run, for the value history. */
  step = -1;
  /** Where every value ever logged came from (by CRC), to name stale or foreign data found later. */
  readonly #history = new Map<number, string>();

  /** Which export block a value was written to, and at which step, if the model ever saw it. */
  origin(value: Buffer): string | undefined {
    return this.#history.get(crc32(value));
  }

  names(filter: (e: ExportModel) => boolean = () => true): string[] {
    return [...this.exports.values()].filter(filter).map((e) => e.name).sort();
  }

  liveNames(kind?: ExportKind): string[] {
    return this.names((e) => e.live && (kind === undefined || e.kind === kind));
  }

  get(name: string): ExportModel {
    const e = this.exports.get(name);
    if (!e) throw new Error(`model: no export ${name}`);
    return e;
  }

  // --- data operations -------------------------------------------------------------------------

  writeChanges(e: ExportModel, offset: number, data: Buffer): BlockChange[] {
    const changes: BlockChange[] = [];
    const first = Math.floor(offset / BLOCK_BYTES);
    const last = Math.floor((offset + data.length - 1) / BLOCK_BYTES);
    for (let lba = first; lba <= last; lba++) {
      const value = Buffer.from(currentValue(e.blocks[lba]!));
      const from = Math.max(offset, lba * BLOCK_BYTES);
      const to = Math.min(offset + data.length, (lba + 1) * BLOCK_BYTES);
      data.copy(value, from - lba * BLOCK_BYTES, from - offset, to - offset);
      changes.push({ lba, value });
    }
    return changes;
  }

  trimChanges(offset: number, length: number): BlockChange[] {
    const changes: BlockChange[] = [];
    const first = Math.ceil(offset / BLOCK_BYTES);
    const end = Math.floor((offset + length) / BLOCK_BYTES);
    for (let lba = first; lba < end; lba++) changes.push({ lba, value: ZERO_BLOCK });
    return changes;
  }

  zeroChanges(e: ExportModel, offset: number, length: number): BlockChange[] {
    const first = Math.ceil(offset / BLOCK_BYTES);
    const end = Math.floor((offset + length) / BLOCK_BYTES);
    if (end <= first) return length > 0 ? this.writeChanges(e, offset, Buffer.alloc(length)) : [];
    const changes: BlockChange[] = [];
    if (offset < first * BLOCK_BYTES) changes.push(...this.writeChanges(e, offset, Buffer.alloc(first * BLOCK_BYTES - offset)));
    if (offset + length > end * BLOCK_BYTES) changes.push(...this.writeChanges(e, end * BLOCK_BYTES, Buffer.alloc(offset + length - end * BLOCK_BYTES)));
    changes.push(...this.trimChanges(offset, length));
    return changes;
  }

  /** Records changes as logged (acknowledged, or possibly applied by a call that failed). */
  log(e: ExportModel, changes: readonly BlockChange[]): void {
    for (const c of changes) {
      const b = e.blocks[c.lba]!;
      if (!currentValue(b).equals(c.value)) b.after.push(c.value);
      const key = crc32(c.value);
      if (!this.#history.has(key)) this.#history.set(key, `${e.name}[${c.lba}] at step ${this.step}`);
    }
  }

  /**
   * Settles what a failed call did to one block, from what a read returned: either the change
   * went in (it stays current) or it did not (the block keeps its value before the call).
   * Returns false when the read shows neither.
   */
  settle(e: ExportModel, lba: number, before: Buffer, found: Buffer): boolean {
    const b = e.blocks[lba]!;
    if (found.equals(currentValue(b))) return true;
    if (!found.equals(before)) return false;
    const i = b.after.findLastIndex((v) => v.equals(before));
    if (i >= 0) b.after.length = i + 1;
    else if (b.durable.equals(before)) b.after.length = 0;
    else return false;
    return true;
  }

  /** A flush completed: everything logged so far is durable. */
  flushAll(): void {
    for (const e of this.exports.values()) {
      for (const b of e.blocks) {
        b.durable = currentValue(b);
        b.after = [];
      }
    }
  }

  // --- management operations -------------------------------------------------------------------

  create(name: string, blocks: number, outcome: { live: boolean; onDisk: 'yes' | 'maybe' }): ExportModel {
    const e = new ExportModel({ name, kind: 'volume', blocks: zeroBlocks(blocks), immutable: false, ...outcome });
    this.exports.set(name, e);
    return e;
  }

  /**
   * A snapshot or clone of `source`. When it was acknowledged it gets its own copy of the
   * source's blocks (the call flushed, so the caller runs flushAll). When it failed, it may
   * still show up after recovery, as the source's layer under a new name, including writes the
   * source received since: it then shares the source's block states so that those are allowed.
   */
  derive(source: ExportModel, name: string, kind: ExportKind, blocks: number, outcome: { acknowledged: boolean; live: boolean }): ExportModel {
    const shared = outcome.acknowledged
      ? source.blocks.map((b) => ({ durable: b.durable, after: [...b.after] }))
      : source.blocks;
    const own = [...shared, ...zeroBlocks(blocks - source.blocks.length)];
    const e = new ExportModel({
      name,
      kind,
      blocks: own,
      live: outcome.live,
      onDisk: outcome.acknowledged ? 'yes' : 'maybe',
      immutable: outcome.acknowledged && kind === 'snapshot',
    });
    this.exports.set(name, e);
    return e;
  }

  resize(e: ExportModel, blocks: number): void {
    if (blocks > e.blocks.length) e.blocks.push(...zeroBlocks(blocks - e.blocks.length));
  }

  /**
   * A management call succeeded, so pool.json now holds exactly the running pool's tables:
   * whatever a failed call left uncertain on disk is settled by what is live.
   */
  metadataSynced(): void {
    for (const e of [...this.exports.values()]) {
      if (!e.live) {
        this.exports.delete(e.name);
        continue;
      }
      e.onDisk = 'yes';
      e.sizesOnDisk = new Set([e.blocks.length]);
    }
  }

  /**
   * Takes what a recovered pool holds (already checked) as the new state. After a power cut the
   * found values are on the medium; after a process restart they may only be in the page
   * cache, so the values allowed before stay allowed until the next flush. Blocks are not
   * shared between exports afterwards.
   */
  adoptRecovered(found: ReadonlyMap<string, ReadonlyArray<Buffer | undefined>>, how: RecoveryKind): void {
    for (const e of [...this.exports.values()]) {
      const blocks = found.get(e.name);
      if (!blocks) {
        this.exports.delete(e.name);
        continue;
      }
      e.blocks = blocks.map((value, lba) => {
        const old = e.blocks[lba];
        // A block whose read failed on injected damage keeps what was allowed before.
        if (!value) return old ? { durable: old.durable, after: [...old.after] } : { durable: ZERO_BLOCK, after: [] };
        if (how === 'medium' || !old) return { durable: value, after: [] };
        const after = [...old.after];
        if (!currentValue(old).equals(value)) after.push(value);
        return { durable: old.durable, after };
      });
      e.live = true;
      e.onDisk = 'yes';
      e.sizesOnDisk = new Set([e.blocks.length]);
    }
  }
}
