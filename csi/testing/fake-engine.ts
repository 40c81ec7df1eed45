/**
 * An in-memory engine behind the EngineApi interface, for controller tests that need what the
 * real engine API does not offer (it does not report a clone's source or a volume's dedup flag)
 * or a volume operation that blocks on demand (to provoke ABORTED). It follows engine/volume-manager.ts:
 * volumes and snapshots share one namespace, sizes round up to 4 KiB, names are validated,
 * errors are EngineErrors with the engine's codes. It stores no data.
 */
import { EngineError } from '../../engine/errors.ts';
import { validateName } from '../../engine/names.ts';
import type { EngineApi, EnginePoolStats, EngineSnapshot, EngineSource, EngineVolume } from '../backend/engine-api.ts';

const BLOCK_BYTES = 4096;
/** The real engine's limit (engine/pool.ts MAX_VOLUME_SIZE_BYTES). */
export const FAKE_MAX_VOLUME_SIZE_BYTES = 2 ** 50;

export class FakeEngine implements EngineApi {
  readonly volumes = new Map<string, EngineVolume>();
  readonly snapshots = new Map<string, EngineSnapshot>();
  nowMs = 1_700_000_000_123;
  capacityBytes = 0;
  physicalBytes = 0;
  readOnly = false;
  /** When set, volume-creating calls wait for it: lets a test hold an operation in flight. */
  gate: Promise<void> | undefined;
  /** Calls made, by method name, for tests that check what reached the engine. */
  readonly calls: string[] = [];

  async createVolume(name: string, sizeBytes: number, opts: { dedup?: boolean } = {}): Promise<EngineVolume> {
    this.calls.push('createVolume');
    await this.gate;
    this.#checkNew(name);
    const volume: EngineVolume = { ...this.#newVolume(name, sizeBytes), source: null, dedup: opts.dedup ?? false };
    this.volumes.set(name, volume);
    return { ...volume };
  }

  async cloneVolume(source: string, name: string, sizeBytes?: number): Promise<EngineVolume> {
    this.calls.push('cloneVolume');
    await this.gate;
    const from = this.#source(source);
    this.#checkNew(name);
    const size = Math.max(sizeBytes ?? 0, from.sizeBytes);
    const volume: EngineVolume = { ...this.#newVolume(name, size), source: from.ref, dedup: from.dedup };
    this.volumes.set(name, volume);
    return { ...volume };
  }

  async deleteVolume(name: string): Promise<void> {
    this.calls.push('deleteVolume');
    this.#volume(name);
    this.volumes.delete(name);
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<EngineVolume> {
    this.calls.push('resizeVolume');
    const volume = this.#volume(name);
    const size = checkedSize(sizeBytes);
    if (size < volume.sizeBytes) throw new EngineError('INVALID_ARGUMENT', `shrinking ${name} is not supported`);
    volume.sizeBytes = size;
    return { ...volume };
  }

  async getVolume(name: string): Promise<EngineVolume> {
    return { ...this.#volume(name) };
  }

  async listVolumes(): Promise<EngineVolume[]> {
    return [...this.volumes.values()].map((v) => ({ ...v }));
  }

  async createSnapshot(volume: string, name: string): Promise<EngineSnapshot> {
    this.calls.push('createSnapshot');
    const source = this.#volume(volume);
    this.#checkNew(name);
    const snapshot = { name, sourceVolume: volume, sizeBytes: source.sizeBytes, allocatedBytes: source.allocatedBytes, createdAtMs: this.nowMs };
    this.snapshots.set(name, snapshot);
    return { ...snapshot };
  }

  async deleteSnapshot(name: string): Promise<void> {
    this.calls.push('deleteSnapshot');
    this.#snapshot(name);
    this.snapshots.delete(name);
  }

  async getSnapshot(name: string): Promise<EngineSnapshot> {
    return { ...this.#snapshot(name) };
  }

  async listSnapshots(): Promise<EngineSnapshot[]> {
    return [...this.snapshots.values()].map((s) => ({ ...s }));
  }

  async stats(): Promise<EnginePoolStats> {
    const base = {
      logicalBytes: 0,
      physicalBytes: this.physicalBytes,
      savedByClonesBytes: 0,
      savedByDedupBytes: 0,
      deadBytes: 0,
      capacityBytes: this.capacityBytes,
      writesPerBatch: 0,
      flushesPerFdatasync: 0,
      batches: 0,
      fdatasyncs: 0,
      volumes: this.volumes.size,
      readOnly: this.readOnly,
    };
    // PoolStats grows fields as the engine does; the backend reads only the ones above.
    return base as EnginePoolStats;
  }

  #newVolume(name: string, sizeBytes: number): EngineVolume {
    return { name, sizeBytes: checkedSize(sizeBytes), allocatedBytes: 0, createdAtMs: this.nowMs, openHandles: 0 };
  }

  #checkNew(name: string): void {
    validateName(name);
    if (this.volumes.has(name) || this.snapshots.has(name)) throw new EngineError('ALREADY_EXISTS', `"${name}" already exists`);
  }

  #source(name: string): { ref: EngineSource; sizeBytes: number; dedup: boolean } {
    const snapshot = this.snapshots.get(name);
    if (snapshot !== undefined) {
      const dedup = this.volumes.get(snapshot.sourceVolume)?.dedup ?? false;
      return { ref: { kind: 'snapshot', name }, sizeBytes: snapshot.sizeBytes, dedup };
    }
    const volume = this.#volume(name);
    return { ref: { kind: 'volume', name }, sizeBytes: volume.sizeBytes, dedup: volume.dedup ?? false };
  }

  #volume(name: string): EngineVolume {
    const volume = this.volumes.get(name);
    if (volume === undefined) throw new EngineError('NOT_FOUND', `volume "${name}" not found`);
    return volume;
  }

  #snapshot(name: string): EngineSnapshot {
    const snapshot = this.snapshots.get(name);
    if (snapshot === undefined) throw new EngineError('NOT_FOUND', `snapshot "${name}" not found`);
    return snapshot;
  }
}

function checkedSize(sizeBytes: number): number {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new EngineError('INVALID_ARGUMENT', `invalid size ${sizeBytes}`);
  if (sizeBytes > FAKE_MAX_VOLUME_SIZE_BYTES) throw new EngineError('OUT_OF_RANGE', `size ${sizeBytes} exceeds the maximum`);
  return Math.ceil(sizeBytes / BLOCK_BYTES) * BLOCK_BYTES;
}
