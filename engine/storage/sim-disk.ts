/**
 * A seeded simulated machine around MemoryStorage, for simulation runs that must replay
 * exactly from a seed:
 *
 *   - power cut: loses what was not synced; with `tear`, each unsynced write instead survives
 *     whole, not at all, or by an arbitrary subset of its 512-byte sectors (seeded choice);
 *   - process restart (kill -9): the old handle dies, the page cache survives;
 *   - fault rules: EIO or ENOSPC by operation kind, file name, nth occurrence or probability;
 *   - crash point: the machine dies after n more operations (power is cut mid-request);
 *   - corruption of a chosen block of a file on the medium;
 *   - counters of everything it did, for reports.
 *
 * Each SimDisk object is one process's view of the machine: after powerCut() or
 * processRestart() the old object fails every call, so an engine left running on it cannot
 * touch the disk the next engine uses.
 */
import { EngineError } from '../errors.ts';
import { MemoryStorage, type DiskOp, type PowerCutPolicy } from './memory-storage.ts';
import { ArmedFault, type FaultRule } from './sim-disk-faults.ts';
import { SimRandom } from './sim-disk-prng.ts';
import type { Storage, StorageFile } from './storage.ts';

export interface SimDiskCounters {
  /** Every file operation attempted (reads, writes, syncs, directory operations). */
  operations: number;
  reads: number;
  writes: number;
  bytesWritten: number;
  datasyncs: number;
  truncates: number;
  syncDirs: number;
  powerCuts: number;
  processRestarts: number;
  /** Unsynced writes at power cuts: persisted whole, lost whole, or torn (some sectors only). */
  unsyncedKept: number;
  unsyncedLost: number;
  unsyncedTorn: number;
  injectedIoErrors: number;
  injectedNoSpace: number;
  corruptions: number;
  /** Crash points reached. */
  crashes: number;
}

export interface Corruption {
  name: string;
  position: number;
  length: number;
  /** The block on the medium before and after the damage. */
  original: Buffer;
  corrupted: Buffer;
}

/** State shared by every view of one machine, across power cuts and process restarts. */
interface Machine {
  random: SimRandom;
  counters: SimDiskCounters;
  faults: ArmedFault[];
  /** Operations that may still complete before the machine dies; undefined: no crash planned. */
  crashAfter: number | undefined;
  crashed: boolean;
}

function zeroCounters(): SimDiskCounters {
  return {
    operations: 0, reads: 0, writes: 0, bytesWritten: 0, datasyncs: 0, truncates: 0, syncDirs: 0,
    powerCuts: 0, processRestarts: 0, unsyncedKept: 0, unsyncedLost: 0, unsyncedTorn: 0,
    injectedIoErrors: 0, injectedNoSpace: 0, corruptions: 0, crashes: 0,
  };
}

class SimFile implements StorageFile {
  readonly #disk: SimDisk;
  readonly #file: StorageFile;
  readonly #name: string;

  constructor(disk: SimDisk, file: StorageFile, name: string) {
    this.#disk = disk;
    this.#file = file;
    this.#name = name;
  }

  read(buf: Buffer, bufOffset: number, length: number, position: number): Promise<number> {
    return this.#disk.run('read', this.#name, 0, () => this.#file.read(buf, bufOffset, length, position));
  }

  write(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void> {
    return this.#disk.run('pwrite', this.#name, length, () => this.#file.write(buf, bufOffset, length, position));
  }

  datasync(): Promise<void> {
    return this.#disk.run('fdatasync', this.#name, 0, () => this.#file.datasync());
  }

  truncate(lengthBytes: number): Promise<void> {
    return this.#disk.run('truncate', this.#name, 0, () => this.#file.truncate(lengthBytes));
  }

  sizeBytes(): Promise<number> {
    return this.#file.sizeBytes();
  }

  close(): Promise<void> {
    return this.#file.close();
  }
}

export class SimDisk implements Storage {
  // Set once; not readonly only so that #view can build a view of an existing machine.
  #mem: MemoryStorage;
  #machine: Machine;
  #gone = false;

  constructor(seed: number) {
    this.#mem = new MemoryStorage();
    this.#machine = { random: new SimRandom(seed), counters: zeroCounters(), faults: [], crashAfter: undefined, crashed: false };
  }

  /** Another view of the same machine (after a restart), on `mem`. */
  static #view(mem: MemoryStorage, machine: Machine): SimDisk {
    const disk = new SimDisk(0);
    disk.#mem = mem;
    disk.#machine = machine;
    return disk;
  }

  get counters(): Readonly<SimDiskCounters> {
    return this.#machine.counters;
  }

  /** True once a crash point was reached: every operation fails until powerCut(). */
  get crashed(): boolean {
    return this.#machine.crashed;
  }

  // --- faults ----------------------------------------------------------------------------------

  /** Arms a rule; the returned object tells how often it fired. Rules survive power cuts. */
  addFault(rule: FaultRule): ArmedFault {
    const armed = new ArmedFault(rule);
    this.#machine.faults.push(armed);
    return armed;
  }

  clearFaults(): void {
    this.#machine.faults = [];
  }

  /** The machine dies after `ops` more operations: the next one after them fails, and all later. */
  crashAfter(ops: number): void {
    if (!Number.isInteger(ops) || ops < 0) throw new RangeError(`crashAfter needs a non-negative integer, got ${ops}`);
    this.#machine.crashAfter = ops;
  }

  /** @internal Runs one file operation through the machine's checks and counters. */
  async run<T>(op: DiskOp, name: string, bytes: number, body: () => Promise<T>): Promise<T> {
    this.#check(op, name, bytes);
    return body();
  }

  #check(op: DiskOp, name: string, bytes: number): void {
    if (this.#gone) throw new EngineError('IO_ERROR', `${op} ${name}: this process's view of the simulated disk is gone (restart or power cut)`);
    const m = this.#machine;
    if (m.crashed) throw new EngineError('IO_ERROR', `${op} ${name}: the simulated machine lost power`);
    if (m.crashAfter !== undefined) {
      if (m.crashAfter === 0) {
        m.crashed = true;
        m.crashAfter = undefined;
        m.counters.crashes++;
        throw new EngineError('IO_ERROR', `${op} ${name}: the simulated machine lost power`);
      }
      m.crashAfter--;
    }
    const c = m.counters;
    c.operations++;
    if (op === 'read') c.reads++;
    else if (op === 'pwrite') {
      c.writes++;
      c.bytesWritten += bytes;
    } else if (op === 'fdatasync') c.datasyncs++;
    else if (op === 'truncate') c.truncates++;
    else if (op === 'syncDir') c.syncDirs++;
    for (const fault of m.faults) {
      if (!fault.matches(op, name)) continue;
      const err = fault.decide(op, name, m.random);
      if (!err) continue;
      if (err.code === 'NO_SPACE') c.injectedNoSpace++;
      else c.injectedIoErrors++;
      if (fault.rule.dropsDirtyData && op === 'fdatasync') this.#mem.dropDirty(name);
      throw err;
    }
  }

  // --- Storage -------------------------------------------------------------------------------

  async open(name: string, opts: { create: boolean }): Promise<StorageFile> {
    this.#check('open', name, 0);
    return new SimFile(this, await this.#mem.open(name, opts), name);
  }

  async list(): Promise<string[]> {
    this.#checkAlive();
    return this.#mem.list();
  }

  async exists(name: string): Promise<boolean> {
    this.#checkAlive();
    return this.#mem.exists(name);
  }

  async remove(name: string): Promise<void> {
    this.#check('remove', name, 0);
    return this.#mem.remove(name);
  }

  async rename(from: string, to: string): Promise<void> {
    this.#check('rename', from, 0);
    return this.#mem.rename(from, to);
  }

  async syncDir(): Promise<void> {
    this.#check('syncDir', '.', 0);
    return this.#mem.syncDir();
  }

  async readFile(name: string): Promise<Buffer | undefined> {
    this.#check('read', name, 0);
    return this.#mem.readFile(name);
  }

  #checkAlive(): void {
    if (this.#gone) throw new EngineError('IO_ERROR', "this process's view of the simulated disk is gone (restart or power cut)");
  }

  // --- restarts --------------------------------------------------------------------------------

  /**
   * Cuts the power and reboots: returns the disk as found afterwards. Without `tear`, every
   * write since its file's last datasync is lost; with it, each survives whole, not at all, or
   * by a random subset of its sectors. Unsynced truncates survive or not (seeded) when tearing.
   * Directory changes survive only up to the last syncDir. This object is dead afterwards.
   */
  powerCut(opts: { tear?: boolean } = {}): SimDisk {
    const m = this.#machine;
    this.#gone = true;
    m.counters.powerCuts++;
    m.crashed = false;
    m.crashAfter = undefined;
    const after = this.#mem.powerCut(opts.tear ? this.#tearing() : this.#losing());
    return SimDisk.#view(after, m);
  }

  /** The engine process dies (kill -9) and a new one starts: the page cache is intact. */
  processRestart(): SimDisk {
    this.#gone = true;
    this.#machine.counters.processRestarts++;
    return SimDisk.#view(this.#mem, this.#machine);
  }

  #losing(): PowerCutPolicy {
    const c = this.#machine.counters;
    return {
      write: () => {
        c.unsyncedLost++;
        return 'none';
      },
      truncate: () => false,
    };
  }

  #tearing(): PowerCutPolicy {
    const { random, counters: c } = this.#machine;
    return {
      write: (_name, _position, _length, _first, sectors) => {
        const how = random.int(3);
        if (how === 0) {
          c.unsyncedKept++;
          return 'all';
        }
        if (how === 1 || sectors === 0) {
          c.unsyncedLost++;
          return 'none';
        }
        const mask = Array.from({ length: sectors }, () => random.chance(0.5));
        const kept = mask.filter(Boolean).length;
        if (kept === sectors) c.unsyncedKept++;
        else if (kept === 0) c.unsyncedLost++;
        else c.unsyncedTorn++;
        return mask;
      },
      truncate: () => random.chance(0.5),
    };
  }

  // --- damage and inspection -------------------------------------------------------------------

  /**
   * Flips 1 to 8 random bytes (seeded) of one block of a file on the medium; reads see the
   * damage too unless an unsynced write covers the bytes.
   */
  corruptBlock(name: string, blockIndex: number, blockBytes = 4096): Corruption {
    const durable = this.#mem.durableLength(name);
    if (durable === undefined) throw new RangeError(`corruptBlock: no file ${name}`);
    const position = blockIndex * blockBytes;
    if (!Number.isInteger(blockIndex) || blockIndex < 0 || position >= durable) {
      throw new RangeError(`corruptBlock: block ${blockIndex} of ${name} is beyond its ${durable} durable bytes`);
    }
    const length = Math.min(blockBytes, durable - position);
    const original = this.#mem.readDurable(name, position, length);
    const mask = Buffer.alloc(length);
    const { random } = this.#machine;
    for (let flips = 1 + random.int(8); flips > 0; flips--) mask[random.int(length)] = 1 + random.int(255);
    this.#mem.corrupt(name, position, mask);
    this.#machine.counters.corruptions++;
    return { name, position, length, original, corrupted: this.#mem.readDurable(name, position, length) };
  }

  /** Bytes of the file on the medium, undefined when there is no such file. */
  durableLength(name: string): number | undefined {
    return this.#mem.durableLength(name);
  }

  readDurable(name: string, position: number, length: number): Buffer {
    return this.#mem.readDurable(name, position, length);
  }

  /** One line per file: sizes in the page cache and on the medium, unsynced changes. */
  describeFiles(): string[] {
    return this.#mem.describeFiles();
  }

  /** The file names, without failing on a dead view (for inspection by the simulation). */
  fileNames(): Promise<string[]> {
    return this.#mem.list();
  }
}
