/**
 * What the Controller service needs from the storage behind it. The controller (controller.ts)
 * owns the CSI rules: validation, idempotency, locks, paging, status codes. A backend only does
 * storage operations, in CSI terms (IDs, bytes, topology), and reports what exists.
 *
 * Two backends are planned (DESIGN.md §2): `local` (backend/local.ts) talks to the engine on this
 * machine; `kube` will create BraidVolume / BraidSnapshot CRs for the node agents.
 *
 * Error contract: "not found" on a lookup is `undefined`, not an error. Failures are EngineErrors
 * (mapped by code) or CsiErrors.
 */
import type { StringMap, Topology, VolumeCondition } from './messages.ts';

/** Where a volume's content came from. */
export interface ContentSource {
  kind: 'snapshot' | 'volume';
  id: string;
}

export interface BackendVolume {
  volumeId: string;
  capacityBytes: number;
  /** The snapshot or volume it was cloned from; null when created empty; undefined when unknown. */
  source: ContentSource | null | undefined;
  /** Whether it stores identical blocks once; undefined when the backend cannot tell. */
  dedup: boolean | undefined;
  /** The volume context (volume-context.ts): the same for the volume's whole life. */
  context: StringMap;
  /** Where the volume is accessible from. */
  topology: Topology[];
  condition: VolumeCondition;
}

export interface BackendSnapshot {
  snapshotId: string;
  sourceVolumeId: string;
  sizeBytes: number;
  createdAtMs: number;
  readyToUse: boolean;
}

export interface NewVolume {
  volumeId: string;
  sizeBytes: number;
  /** Applies to empty volumes; a clone inherits its source's. */
  dedup: boolean;
  /** Dedup domain ('' = the pool's default); applies like dedup. */
  dedupDomain: string;
  source: ContentSource | undefined;
  /** One of backend.topologies(), chosen by the controller. */
  topology: Topology;
}

export interface BackendCapacity {
  availableBytes: number;
  /** The largest volume the backend can create, when it has such a limit. */
  maximumVolumeBytes?: number;
}

export interface ControllerBackend {
  /** The volume ID for a CreateVolume name: deterministic, so retries find the same volume. */
  volumeIdFor(name: string): string;
  /** The snapshot ID for a CreateSnapshot name: deterministic. */
  snapshotIdFor(name: string): string;
  /** Where this backend can place new volumes. */
  topologies(): Topology[];

  getVolume(volumeId: string): Promise<BackendVolume | undefined>;
  /** Every volume, sorted by ID. */
  listVolumes(): Promise<BackendVolume[]>;
  createVolume(spec: NewVolume): Promise<BackendVolume>;
  /** Succeeds when the volume does not exist. */
  deleteVolume(volumeId: string): Promise<void>;
  /** Grows the volume to `sizeBytes` (never shrinks it). */
  expandVolume(volumeId: string, sizeBytes: number): Promise<BackendVolume>;

  getSnapshot(snapshotId: string): Promise<BackendSnapshot | undefined>;
  /** Every snapshot, sorted by ID. */
  listSnapshots(): Promise<BackendSnapshot[]>;
  createSnapshot(snapshotId: string, sourceVolumeId: string): Promise<BackendSnapshot>;
  /** Succeeds when the snapshot does not exist. */
  deleteSnapshot(snapshotId: string): Promise<void>;

  /** Free space for new volumes in `topology` (anywhere when null). */
  capacity(topology: Topology | null): Promise<BackendCapacity>;
  /** Resolves when the storage answers; rejects with the reason otherwise. */
  probe(): Promise<void>;
}
