/**
 * The management side of the engine: what the engine API (gRPC) and the CLI call. Sizes are in
 * bytes as numbers; every size the engine accepts is below 2^53 (see MAX_VOLUME_SIZE_BYTES), so
 * they are exact. Errors are EngineErrors.
 */

export interface VolumeInfo {
  name: string;
  sizeBytes: number;
  /** Bytes of the volume that are mapped (written and not trimmed). */
  allocatedBytes: number;
  createdAtMs: number;
  /** Open block-device handles (NBD connections). */
  openHandles: number;
}

/** An immutable point-in-time image of a volume, readable as a read-only export. */
export interface SnapshotInfo {
  name: string;
  /** The volume it was taken of (it may have been deleted since). */
  sourceVolume: string;
  sizeBytes: number;
  /** Bytes mapped in the image (what a full copy would cost). */
  allocatedBytes: number;
  createdAtMs: number;
}

export interface CreateVolumeOptions {
  /** Store identical 4 KiB blocks once (inherited by clones). */
  dedup?: boolean;
  /** Match only with dedup volumes of this domain (a name); implies dedup. Default: the pool's. */
  dedupDomain?: string;
}

export interface PoolStats {
  logicalBytes: number;
  physicalBytes: number;
  savedByClonesBytes: number;
  savedByDedupBytes: number;
  deadBytes: number;
  capacityBytes: number;
  writesPerBatch: number;
  flushesPerFdatasync: number;
  batches: number;
  fdatasyncs: number;
  volumes: number;
  readOnly: boolean;
  /** Why the pool is read-only (the failed write or fdatasync); present only when readOnly. */
  readOnlyReason?: string;
  /** Segment files of the log. */
  segments: number;
  /** Cleaner progress since start. */
  segmentsCleaned: number;
  blocksRelocated: number;
  /** Segments the cleaner leaves alone because a live block in them failed its checksum. */
  segmentsDamaged: number;
  /** Blocks read from disk that failed their checksum (each read failed with an error). */
  checksumFailures: number;
  /** Shared block cache: size and lookups since start. */
  cacheBytes: number;
  cacheHits: number;
  cacheMisses: number;
  /** Blocks written as dedup references instead of data since start. */
  dedupReferencedBlocks: number;
}

/**
 * Volumes and snapshots share one namespace (both are NBD exports by name).
 * Snapshots and clones copy metadata only: their cost does not grow with the data they share.
 */
export interface VolumeManager {
  createVolume(name: string, sizeBytes: number, opts?: CreateVolumeOptions): Promise<VolumeInfo>;
  /** A new volume whose content is `source`'s (a volume or a snapshot); sizeBytes may grow it. */
  cloneVolume(source: string, name: string, sizeBytes?: number): Promise<VolumeInfo>;
  createSnapshot(volume: string, name: string): Promise<SnapshotInfo>;
  /** Succeeds even when clones depend on it; shared blocks stay until nothing uses them. */
  deleteSnapshot(name: string): Promise<void>;
  getSnapshot(name: string): SnapshotInfo;
  listSnapshots(): SnapshotInfo[];
  deleteVolume(name: string): Promise<void>;
  resizeVolume(name: string, sizeBytes: number): Promise<VolumeInfo>;
  getVolume(name: string): VolumeInfo;
  listVolumes(): VolumeInfo[];
  stats(): PoolStats;
}
