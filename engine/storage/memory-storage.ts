/**
 * A simulated disk for tests. It keeps what a real disk would keep across a power cut and no
 * more: file contents survive only up to each file's last datasync, and directory changes
 * (create, rename, remove) only up to the last syncDir. `powerCut()` returns the storage as it
 * would be found after a reboot. Failures can be injected per operation.
 *
 * Each file has two images: what reads see now (the page cache) and what the medium holds.
 * Changes since the last datasync are kept in order, so a power cut can also let some of them
 * through, whole or by 512-byte sectors (a torn write): see PowerCutPolicy. The seeded machine
 * around this (faults by rule, crash points, tearing choices) is engine/storage/sim-disk.ts.
 */
import { EngineError } from '../errors.ts';
import type { Storage, StorageFile } from './storage.ts';

/** The unit a disk writes atomically: a power cut never leaves half a sector. */
export const SECTOR_BYTES = 512;

type Change = { kind: 'write'; position: number; data: Buffer } | { kind: 'truncate'; length: number };

interface Inode {
  /** What reads see: the medium plus every change since the last datasync. */
  data: Buffer;
  length: number;
  /** What the medium holds. */
  durable: Buffer;
  durableLength: number;
  /** Changes not yet on the medium, oldest first. */
  unsynced: Change[];
}

export type FaultOp = 'read' | 'write' | 'datasync' | 'open' | 'rename';
/** The exact operation, finer than FaultOp (a truncate is a 'write', a syncDir a 'datasync'). */
export type DiskOp = 'read' | 'pwrite' | 'truncate' | 'fdatasync' | 'open' | 'rename' | 'remove' | 'syncDir';
/** Returns an error to fail the operation with, or undefined to let it run. */
export type FaultHook = (op: FaultOp, name: string, exact: DiskOp) => EngineError | undefined;

const FAULT_OP: Record<DiskOp, FaultOp> = {
  read: 'read',
  pwrite: 'write',
  truncate: 'write',
  fdatasync: 'datasync',
  open: 'open',
  rename: 'rename',
  remove: 'rename',
  syncDir: 'datasync',
};

/**
 * Decides, at a power cut, what of each unsynced change reached the medium. Changes are
 * offered oldest first; a sector persisted by a later write wins over an earlier one.
 */
export interface PowerCutPolicy {
  /** 'all', 'none', or per sector of the write (sector i covers file sector firstSector + i). */
  write(name: string, position: number, length: number, firstSector: number, sectors: number): 'all' | 'none' | boolean[];
  truncate(name: string, length: number): boolean;
}

const LOSE_EVERYTHING: PowerCutPolicy = { write: () => 'none', truncate: () => false };

class MemoryFile implements StorageFile {
  readonly #inode: Inode;
  readonly #name: string;
  readonly #storage: MemoryStorage;

  constructor(inode: Inode, name: string, storage: MemoryStorage) {
    this.#inode = inode;
    this.#name = name;
    this.#storage = storage;
  }

  async read(buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
    this.#storage.fault('read', this.#name);
    const n = Math.max(0, Math.min(length, this.#inode.length - position));
    if (n > 0) this.#inode.data.copy(buf, bufOffset, position, position + n); // past EOF reads 0 bytes, as pread does
    return n;
  }

  async write(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void> {
    this.#storage.fault('pwrite', this.#name);
    const data = Buffer.from(buf.subarray(bufOffset, bufOffset + length));
    const change: Change = { kind: 'write', position, data };
    this.#inode.unsynced.push(change);
    applyToCache(this.#inode, change);
  }

  async datasync(): Promise<void> {
    this.#storage.fault('fdatasync', this.#name);
    const inode = this.#inode;
    for (const change of inode.unsynced) applyToMedium(inode, change, 'all');
    inode.unsynced.length = 0;
    this.#storage.datasyncs++;
  }

  async truncate(lengthBytes: number): Promise<void> {
    this.#storage.fault('truncate', this.#name);
    const change: Change = { kind: 'truncate', length: lengthBytes };
    this.#inode.unsynced.push(change);
    applyToCache(this.#inode, change);
  }

  async sizeBytes(): Promise<number> {
    return this.#inode.length;
  }

  async close(): Promise<void> {}
}

/** Returns buf if it holds `length` bytes, else a zero-extended copy (doubling, to amortize). */
function grown(buf: Buffer, length: number): Buffer {
  if (buf.length >= length) return buf;
  const bigger = Buffer.alloc(Math.max(length, buf.length * 2));
  buf.copy(bigger);
  return bigger;
}

// Both images keep every byte beyond their length zero, so growing a file shows zeros.
function applyToCache(inode: Inode, change: Change): void {
  if (change.kind === 'write') {
    inode.data = grown(inode.data, change.position + change.data.length);
    change.data.copy(inode.data, change.position);
    inode.length = Math.max(inode.length, change.position + change.data.length);
  } else {
    inode.data = grown(inode.data, change.length);
    if (change.length < inode.length) inode.data.fill(0, change.length, inode.length);
    inode.length = change.length;
  }
}

/** Puts a change (or the chosen sectors of a write) on the medium. */
function applyToMedium(inode: Inode, change: Change, sectors: 'all' | boolean[]): void {
  if (change.kind === 'truncate') {
    inode.durable = grown(inode.durable, change.length);
    if (change.length < inode.durableLength) inode.durable.fill(0, change.length, inode.durableLength);
    inode.durableLength = change.length;
    return;
  }
  const start = change.position;
  const end = start + change.data.length;
  inode.durable = grown(inode.durable, end);
  if (sectors === 'all') {
    change.data.copy(inode.durable, start);
    inode.durableLength = Math.max(inode.durableLength, end);
    return;
  }
  const firstSector = Math.floor(start / SECTOR_BYTES);
  for (let i = 0; i < sectors.length; i++) {
    if (!sectors[i]) continue;
    const from = Math.max(start, (firstSector + i) * SECTOR_BYTES);
    const to = Math.min(end, (firstSector + i + 1) * SECTOR_BYTES);
    if (from >= to) continue;
    change.data.copy(inode.durable, from, from - start, to - start);
    inode.durableLength = Math.max(inode.durableLength, to);
  }
}

function newInode(): Inode {
  return { data: Buffer.alloc(0), length: 0, durable: Buffer.alloc(0), durableLength: 0, unsynced: [] };
}

export class MemoryStorage implements Storage {
  #entries = new Map<string, Inode>();
  #durableEntries = new Map<string, Inode>();
  faultHook: FaultHook | undefined;
  datasyncs = 0;

  #dead = false;

  fault(exact: DiskOp, name: string): void {
    if (this.#dead) throw new EngineError('IO_ERROR', `${exact} ${name}: the simulated machine lost power`);
    const err = this.faultHook?.(FAULT_OP[exact], name, exact);
    if (err) throw err;
  }

  async open(name: string, opts: { create: boolean }): Promise<StorageFile> {
    this.fault('open', name);
    let inode = this.#entries.get(name);
    if (!inode) {
      if (!opts.create) throw new EngineError('IO_ERROR', `open ${name}: no such file`);
      inode = newInode();
      this.#entries.set(name, inode);
    }
    return new MemoryFile(inode, name, this);
  }

  async list(): Promise<string[]> {
    return [...this.#entries.keys()];
  }

  async exists(name: string): Promise<boolean> {
    return this.#entries.has(name);
  }

  async remove(name: string): Promise<void> {
    this.fault('remove', name);
    this.#entries.delete(name);
  }

  async rename(from: string, to: string): Promise<void> {
    this.fault('rename', from);
    const inode = this.#entries.get(from);
    if (!inode) throw new EngineError('IO_ERROR', `rename ${from}: no such file`);
    this.#entries.delete(from);
    this.#entries.set(to, inode);
  }

  async syncDir(): Promise<void> {
    this.fault('syncDir', '.');
    this.#durableEntries = new Map(this.#entries);
  }

  async readFile(name: string): Promise<Buffer | undefined> {
    const inode = this.#entries.get(name);
    return inode ? Buffer.from(inode.data.subarray(0, inode.length)) : undefined;
  }

  /**
   * Simulates a power cut and reboot: returns a new storage holding only what was durable,
   * plus whatever of the unsynced changes `policy` lets through (by default none).
   * This storage must not be used afterwards (the engine on it is considered dead).
   */
  powerCut(policy: PowerCutPolicy = LOSE_EVERYTHING): MemoryStorage {
    this.#dead = true;
    const after = new MemoryStorage();
    // A file renamed or hard-linked twice must come back as one file: copy each inode once.
    const copies = new Map<Inode, Inode>();
    for (const [name, inode] of this.#durableEntries) {
      let copy = copies.get(inode);
      if (!copy) {
        copy = { data: Buffer.alloc(0), length: 0, durable: Buffer.from(inode.durable.subarray(0, inode.durableLength)), durableLength: inode.durableLength, unsynced: [] };
        for (const change of inode.unsynced) {
          if (change.kind === 'truncate') {
            if (policy.truncate(name, change.length)) applyToMedium(copy, change, 'all');
            continue;
          }
          const first = Math.floor(change.position / SECTOR_BYTES);
          const sectors = Math.ceil((change.position + change.data.length) / SECTOR_BYTES) - first;
          const choice = policy.write(name, change.position, change.data.length, first, sectors);
          if (choice !== 'none') applyToMedium(copy, change, choice);
        }
        copy.data = Buffer.from(copy.durable.subarray(0, copy.durableLength));
        copy.length = copy.durableLength;
        copies.set(inode, copy);
      }
      after.#entries.set(name, copy);
    }
    after.#durableEntries = new Map(after.#entries);
    return after;
  }

  // --- inspection and damage, for simulations -------------------------------------------------

  /** Bytes of a file on the medium (undefined if no such file). */
  durableLength(name: string): number | undefined {
    return this.#entries.get(name)?.durableLength;
  }

  /** A copy of bytes of a file as the medium holds them. */
  readDurable(name: string, position: number, length: number): Buffer {
    const inode = this.#entries.get(name);
    if (!inode) throw new EngineError('IO_ERROR', `readDurable ${name}: no such file`);
    const out = Buffer.alloc(length);
    inode.durable.copy(out, 0, position, Math.min(position + length, inode.durableLength));
    return out;
  }

  /**
   * Damages the medium: XORs `mask` into the file's durable bytes at `position`. Reads see the
   * damage too, except where a change not yet synced covers the byte (the page cache holds a
   * newer copy there, which a later datasync would write over the damage anyway).
   */
  corrupt(name: string, position: number, mask: Buffer): void {
    const inode = this.#entries.get(name);
    if (!inode) throw new EngineError('IO_ERROR', `corrupt ${name}: no such file`);
    if (position + mask.length > inode.durableLength) throw new RangeError(`corrupt ${name}: ${position}+${mask.length} is beyond the durable data`);
    for (let i = 0; i < mask.length; i++) {
      if (mask[i] === 0) continue;
      const at = position + i;
      inode.durable[at]! ^= mask[i]!;
      if (!coveredByUnsynced(inode, at)) inode.data[at]! ^= mask[i]!;
    }
  }

  /** One line per file: size seen, size on the medium, changes not yet synced (for logs). */
  describeFiles(): string[] {
    return [...this.#entries].sort(([a], [b]) => a.localeCompare(b)).map(([name, inode]) => {
      const durable = this.#durableEntries.get(name) === inode ? '' : ' (not yet in the directory on the medium)';
      return `${name}: ${inode.length} B, ${inode.durableLength} B on the medium, ${inode.unsynced.length} unsynced change(s)${durable}`;
    });
  }

  /**
   * Forgets the file's unsynced changes as a Linux filesystem does after a failed fsync: the
   * page cache keeps showing them, but they are no longer dirty, so no later datasync writes
   * them and a power cut loses them.
   */
  dropDirty(name: string): void {
    const inode = this.#entries.get(name);
    if (inode) inode.unsynced.length = 0;
  }
}

function coveredByUnsynced(inode: Inode, at: number): boolean {
  for (const c of inode.unsynced) {
    if (c.kind === 'write' ? at >= c.position && at < c.position + c.data.length : at >= c.length) return true;
  }
  return false;
}
