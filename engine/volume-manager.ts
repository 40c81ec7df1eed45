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
}

export interface VolumeManager {
  createVolume(name: string, sizeBytes: number): Promise<VolumeInfo>;
  deleteVolume(name: string): Promise<void>;
  resizeVolume(name: string, sizeBytes: number): Promise<VolumeInfo>;
  getVolume(name: string): VolumeInfo;
  listVolumes(): VolumeInfo[];
  stats(): PoolStats;
}
