/**
 * The engine operations the local backend uses, as an interface: EngineClient implements it
 * (pass the client itself), and tests can put an in-memory engine behind the real controller
 * (csi/testing/fake-engine.ts). It states exactly what the backend needs from the engine API.
 *
 * Shapes follow engine/volume-manager.ts (the engine's management contract), plus two fields
 * the controller uses for idempotency that the engine API does not report yet (see
 * EngineVolume). csi/ may import only engine/api/client.ts of the engine API, so the engine's
 * own types are reached through EngineClient.
 */
import type { EngineClient } from '../../engine/api/client.ts';

/** VolumeInfo as the engine client returns it. */
type ClientVolumeInfo = Awaited<ReturnType<EngineClient['getVolume']>>;

/** PoolStats as the engine client returns it. */
export type EnginePoolStats = Awaited<ReturnType<EngineClient['stats']>>;

/** The volume or snapshot a clone was made from (the engine keeps both in one namespace). */
export interface EngineSource {
  kind: 'volume' | 'snapshot';
  name: string;
}

/**
 * A volume. The engine API does not report a clone's source or a volume's dedup flag yet
 * (engine.proto keeps Volume fields 6 and 7 for them). A volume without the
 * `source` key therefore means "source unknown", and `source: null` "created empty"; a volume
 * without `dedup` means "dedup unknown". The controller checks what it knows and no more, so a
 * retried clone stays idempotent either way.
 */
export type EngineVolume = ClientVolumeInfo & { source?: EngineSource | null; dedup?: boolean };

/** engine/volume-manager.ts SnapshotInfo. */
export interface EngineSnapshot {
  name: string;
  sourceVolume: string;
  sizeBytes: number;
  allocatedBytes: number;
  createdAtMs: number;
}

/** The engine API (engine/volume-manager.ts's VolumeManager, asynchronous, over gRPC). */
export interface EngineApi {
  createVolume(name: string, sizeBytes: number, opts?: { dedup?: boolean }): Promise<EngineVolume>;
  cloneVolume(source: string, name: string, sizeBytes?: number): Promise<EngineVolume>;
  deleteVolume(name: string): Promise<void>;
  resizeVolume(name: string, sizeBytes: number): Promise<EngineVolume>;
  getVolume(name: string): Promise<EngineVolume>;
  listVolumes(): Promise<EngineVolume[]>;
  createSnapshot(volume: string, name: string): Promise<EngineSnapshot>;
  deleteSnapshot(name: string): Promise<void>;
  getSnapshot(name: string): Promise<EngineSnapshot>;
  listSnapshots(): Promise<EngineSnapshot[]>;
  stats(): Promise<EnginePoolStats>;
}
