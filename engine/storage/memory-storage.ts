/**
 * A simulated disk for tests. It keeps what a real disk would keep across a power cut and no
 * more: file contents survive only up to each file's last datasync, and directory changes
 * (create, rename, remove) only up to the last syncDir. `powerCut()` returns the storage as it
 * would be found after a reboot. Failures can be injected per operation.
 */
import { EngineError } from '../errors.ts';
import type { Storage, StorageFile } from './storage.ts';

interface Inode {
  data: Buffer;
  length: number;
  /** Undo records of writes since the last datasync, newest last. */
  undo: Array<{ position: number; before: Buffer; lengthBefore: number }>;
}

export type FaultOp = 'read' | 'write' | 'datasync' | 'open' | 'rename';
/** Returns an error to fail the operation with, or undefined to let it run. */
export type FaultHook = (op: FaultOp, name: string) => EngineError | undefined;

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
    this.#inode.data.copy(buf, bufOffset, position, position + n);
    return n;
  }

  async write(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void> {
    this.#storage.fault('write', this.#name);
    const inode = this.#inode;
    ensureCapacity(inode, position + length);
    const before = Buffer.from(inode.data.subarray(position, position + length));
    inode.undo.push({ position, before, lengthBefore: inode.length });
    buf.copy(inode.data, position, bufOffset, bufOffset + length);
    inode.length = Math.max(inode.length, position + length);
  }

  async datasync(): Promise<void> {
    this.#storage.fault('datasync', this.#name);
    this.#inode.undo.length = 0;
    this.#storage.datasyncs++;
  }

  async truncate(lengthBytes: number): Promise<void> {
    this.#storage.fault('write', this.#name);
    const inode = this.#inode;
    ensureCapacity(inode, lengthBytes);
    const start = Math.min(lengthBytes, inode.length);
    const end = Math.max(lengthBytes, inode.length);
    inode.undo.push({ position: start, before: Buffer.from(inode.data.subarray(start, end)), lengthBefore: inode.length });
    inode.data.fill(0, start, end);
    inode.length = lengthBytes;
  }

  async sizeBytes(): Promise<number> {
    return this.#inode.length;
  }

  async close(): Promise<void> {}
}

function ensureCapacity(inode: Inode, length: number): void {
  if (inode.data.length >= length) return;
  const grown = Buffer.alloc(Math.max(length, inode.data.length * 2));
  inode.data.copy(grown);
  inode.data = grown;
}

/** Rolls an inode back to its last datasync. */
function loseUnsynced(inode: Inode): void {
  for (let i = inode.undo.length - 1; i >= 0; i--) {
    const u = inode.undo[i]!;
    u.before.copy(inode.data, u.position);
    inode.length = u.lengthBefore;
  }
  inode.undo.length = 0;
  inode.data.fill(0, inode.length);
}

export class MemoryStorage implements Storage {
  #entries = new Map<string, Inode>();
  #durableEntries = new Map<string, Inode>();
  faultHook: FaultHook | undefined;
  datasyncs = 0;

  #dead = false;

  fault(op: FaultOp, name: string): void {
    if (this.#dead) throw new EngineError('IO_ERROR', `${op} ${name}: the simulated machine lost power`);
    const err = this.faultHook?.(op, name);
    if (err) throw err;
  }

  async open(name: string, opts: { create: boolean }): Promise<StorageFile> {
    this.fault('open', name);
    let inode = this.#entries.get(name);
    if (!inode) {
      if (!opts.create) throw new EngineError('IO_ERROR', `open ${name}: no such file`);
      inode = { data: Buffer.alloc(0), length: 0, undo: [] };
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
    this.fault('rename', name);
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
    this.fault('datasync', '.');
    this.#durableEntries = new Map(this.#entries);
  }

  async readFile(name: string): Promise<Buffer | undefined> {
    const inode = this.#entries.get(name);
    return inode ? Buffer.from(inode.data.subarray(0, inode.length)) : undefined;
  }

  /**
   * Simulates a power cut and reboot: returns a new storage holding only what was durable.
   * This storage must not be used afterwards (the engine on it is considered dead).
   */
  powerCut(): MemoryStorage {
    this.#dead = true;
    const after = new MemoryStorage();
    for (const [name, inode] of this.#durableEntries) {
      const copy: Inode = { data: Buffer.from(inode.data), length: inode.length, undo: [...inode.undo] };
      loseUnsynced(copy);
      after.#entries.set(name, copy);
    }
    after.#durableEntries = new Map(after.#entries);
    return after;
  }
}
