/**
 * The local controller backend: the engine on this machine, reached through the engine API
 * (DIR/engine.sock). Used by `braid serve` (single node, embedded mode) and by the conformance
 * tests. Every volume lives on this node, so the topology is always this node.
 *
 * IDs: a volume's CSI ID is its engine name, which is also its NBD export name; CSI names map to
 * engine names through engine-name.ts. Volumes and snapshots share the engine's namespace.
 */
import { statfs } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { EngineError } from '../../engine/errors.ts';
import { isValidName } from '../../engine/names.ts';
import type {
  BackendCapacity,
  BackendSnapshot,
  BackendVolume,
  ContentSource,
  ControllerBackend,
  NewVolume,
} from '../controller-backend.ts';
import { engineNameFor } from '../engine-name.ts';
import type { Topology, VolumeCondition } from '../messages.ts';
import { nodeTopology, segmentsMatch } from '../topology.ts';
import { CONTEXT_EXPORT_NAME, CONTEXT_NBD_SOCKET } from '../volume-context.ts';
import type { EngineApi, EnginePoolStats, EngineSnapshot, EngineSource, EngineVolume } from './engine-api.ts';

/** The NBD socket's name in the pool directory (CLI.md: DIR/nbd.sock beside DIR/engine.sock). */
export const NBD_SOCKET_NAME = 'nbd.sock';

export interface LocalBackendOptions {
  engine: EngineApi;
  /** This node's name, reported as the topology of every volume. */
  nodeId: string;
  /** The engine's pool directory (DIR), for its NBD socket and its filesystem's free space. */
  poolDir: string;
}

export class LocalBackend implements ControllerBackend {
  readonly #engine: EngineApi;
  readonly #topology: Topology;
  readonly #poolDir: string;
  readonly #nbdSocketPath: string;

  constructor(opts: LocalBackendOptions) {
    this.#engine = opts.engine;
    this.#topology = nodeTopology(opts.nodeId);
    this.#poolDir = opts.poolDir;
    this.#nbdSocketPath = join(opts.poolDir, NBD_SOCKET_NAME);
  }

  /** The pool directory of an engine socket path (DIR/engine.sock -> DIR). */
  static poolDirOf(engineSocketPath: string): string {
    return dirname(engineSocketPath);
  }

  volumeIdFor(name: string): string {
    return engineNameFor(name);
  }

  snapshotIdFor(name: string): string {
    return engineNameFor(name);
  }

  topologies(): Topology[] {
    return [this.#topology];
  }

  async getVolume(volumeId: string): Promise<BackendVolume | undefined> {
    const info = await orUndefined(volumeId, (name) => this.#engine.getVolume(name));
    return info === undefined ? undefined : this.#toVolume(info, conditionOf(await this.#engine.stats()));
  }

  async listVolumes(): Promise<BackendVolume[]> {
    const [volumes, stats] = await Promise.all([this.#engine.listVolumes(), this.#engine.stats()]);
    const condition = conditionOf(stats);
    return volumes.map((info) => this.#toVolume(info, condition));
  }

  async createVolume(spec: NewVolume): Promise<BackendVolume> {
    const info =
      spec.source === undefined
        ? await this.#engine.createVolume(spec.volumeId, spec.sizeBytes, { dedup: spec.dedup, ...(spec.dedupDomain === '' ? {} : { dedupDomain: spec.dedupDomain }) })
        : await this.#engine.cloneVolume(spec.source.id, spec.volumeId, spec.sizeBytes);
    // The engine does not report sources yet; we know this one, and it is part of the answer.
    const withSource: EngineVolume = { ...info, source: spec.source === undefined ? null : toEngineSource(spec.source) };
    return this.#toVolume(withSource, conditionOf(await this.#engine.stats()));
  }

  async deleteVolume(volumeId: string): Promise<void> {
    if (!isValidName(volumeId)) return;
    await ignoreNotFound(this.#engine.deleteVolume(volumeId));
  }

  async expandVolume(volumeId: string, sizeBytes: number): Promise<BackendVolume> {
    const info = await this.#engine.resizeVolume(volumeId, sizeBytes);
    return this.#toVolume(info, conditionOf(await this.#engine.stats()));
  }

  async getSnapshot(snapshotId: string): Promise<BackendSnapshot | undefined> {
    const info = await orUndefined(snapshotId, (name) => this.#engine.getSnapshot(name));
    return info === undefined ? undefined : toSnapshot(info);
  }

  async listSnapshots(): Promise<BackendSnapshot[]> {
    return (await this.#engine.listSnapshots()).map(toSnapshot);
  }

  async createSnapshot(snapshotId: string, sourceVolumeId: string): Promise<BackendSnapshot> {
    return toSnapshot(await this.#engine.createSnapshot(sourceVolumeId, snapshotId));
  }

  async deleteSnapshot(snapshotId: string): Promise<void> {
    if (!isValidName(snapshotId)) return;
    await ignoreNotFound(this.#engine.deleteSnapshot(snapshotId));
  }

  /**
   * Volumes are thin, so what limits new ones is free physical space: the pool's budget minus
   * what it uses, or, for a pool without a budget, the free space of its filesystem.
   */
  async capacity(topology: Topology | null): Promise<BackendCapacity> {
    if (topology !== null && !segmentsMatch(topology, this.#topology)) return { availableBytes: 0 };
    const stats = await this.#engine.stats();
    if (stats.capacityBytes > 0) return { availableBytes: Math.max(0, stats.capacityBytes - stats.physicalBytes) };
    const fs = await statfs(this.#poolDir);
    return { availableBytes: Math.min(Number.MAX_SAFE_INTEGER, fs.bavail * fs.bsize) };
  }

  async probe(): Promise<void> {
    await this.#engine.stats();
  }

  #toVolume(info: EngineVolume, condition: VolumeCondition): BackendVolume {
    return {
      volumeId: info.name,
      capacityBytes: info.sizeBytes,
      source: sourceOf(info),
      dedup: info.dedup,
      context: { [CONTEXT_EXPORT_NAME]: info.name, [CONTEXT_NBD_SOCKET]: this.#nbdSocketPath },
      topology: [this.#topology],
      condition,
    };
  }
}

/** A name that cannot exist in the engine is simply not found; so is NOT_FOUND. */
async function orUndefined<T>(name: string, lookup: (name: string) => Promise<T>): Promise<T | undefined> {
  if (!isValidName(name)) return undefined;
  try {
    return await lookup(name);
  } catch (err) {
    if (err instanceof EngineError && err.code === 'NOT_FOUND') return undefined;
    throw err;
  }
}

async function ignoreNotFound(operation: Promise<void>): Promise<void> {
  try {
    await operation;
  } catch (err) {
    if (!(err instanceof EngineError && err.code === 'NOT_FOUND')) throw err;
  }
}

/** The pool's health is every volume's: a pool that turned read-only cannot take writes. */
function conditionOf(stats: EnginePoolStats): VolumeCondition {
  return stats.readOnly
    ? { abnormal: true, message: 'the storage pool turned read-only after an I/O error: writes fail until it is repaired' }
    : { abnormal: false, message: 'volume is healthy' };
}

function toSnapshot(info: EngineSnapshot): BackendSnapshot {
  // Snapshots copy metadata only: usable the moment they exist.
  return { snapshotId: info.name, sourceVolumeId: info.sourceVolume, sizeBytes: info.sizeBytes, createdAtMs: info.createdAtMs, readyToUse: true };
}

function toEngineSource(source: ContentSource): EngineSource {
  return { kind: source.kind, name: source.id };
}

/** Known (a source, or null for an empty volume) only when the engine reports the field. */
function sourceOf(info: EngineVolume): ContentSource | null | undefined {
  if (!('source' in info)) return undefined;
  return info.source == null ? null : { kind: info.source.kind, id: info.source.name };
}
