/**
 * The engine API's wire schema: loads engine.proto at run time (no generated code) and declares
 * the TypeScript shapes of its messages, plus the conversions between them and the engine's
 * plain objects (VolumeInfo, SnapshotInfo, PoolStats).
 *
 * Invariant: 64-bit integers never pass through a double on the wire side. proto-loader decodes
 * them as decimal strings (`longs: String`); we encode them from strings too. The conversion to
 * `number` happens here, once, and refuses anything that is not a safe integer, so no size is
 * ever silently rounded.
 */
import { fileURLToPath } from 'node:url';
import * as protoLoader from '@grpc/proto-loader';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import type { PoolStats, SnapshotInfo, VolumeInfo } from '../volume-manager.ts';

const PROTO_PATH = fileURLToPath(new URL('./engine.proto', import.meta.url));
const SERVICE_NAME = 'braid.engine.v1.Engine';

const packageDefinition = protoLoader.loadSync(PROTO_PATH, {
  keepCase: false, // size_bytes on the wire is sizeBytes here
  longs: String, // exact 64-bit values; see toSafeInteger
  enums: String,
  defaults: true, // absent fields decode to their proto3 default, so every field is present
  oneofs: true,
});

/** The Engine service as grpc-js wants it for Server#addService and makeUnaryRequest. */
export const engineService = packageDefinition[SERVICE_NAME] as ServiceDefinition;

export type EngineMethodName =
  | 'CreateVolume'
  | 'DeleteVolume'
  | 'ResizeVolume'
  | 'GetVolume'
  | 'ListVolumes'
  | 'GetStats'
  | 'CloneVolume'
  | 'CreateSnapshot'
  | 'DeleteSnapshot'
  | 'GetSnapshot'
  | 'ListSnapshots';

export function engineMethod(name: EngineMethodName): MethodDefinition<object, object> {
  const method = engineService[name];
  if (method === undefined) throw new Error(`engine.proto has no method ${name}`);
  return method as MethodDefinition<object, object>;
}

/** A uint64/int64 field: a decimal string when decoded; we also encode from strings. */
export type WireInt64 = string;

export interface WireVolume {
  name: string;
  sizeBytes: WireInt64;
  allocatedBytes: WireInt64;
  createdAtMs: WireInt64;
  openHandles: number;
}

export interface WireSnapshot {
  name: string;
  sourceVolume: string;
  sizeBytes: WireInt64;
  allocatedBytes: WireInt64;
  createdAtMs: WireInt64;
}

export interface CreateVolumeRequest {
  name: string;
  sizeBytes: WireInt64;
  dedup: boolean;
  dedupDomain: string;
}
export interface DeleteVolumeRequest {
  name: string;
}
export interface ResizeVolumeRequest {
  name: string;
  sizeBytes: WireInt64;
}
export interface GetVolumeRequest {
  name: string;
}
export type ListVolumesRequest = Record<string, never>;
export type GetStatsRequest = Record<string, never>;
export interface CloneVolumeRequest {
  source: string;
  name: string;
  /** "0" (the proto3 default, also what an absent field decodes to) means the source's size. */
  sizeBytes: WireInt64;
}
export interface CreateSnapshotRequest {
  volume: string;
  name: string;
}
export interface DeleteSnapshotRequest {
  name: string;
}
export interface GetSnapshotRequest {
  name: string;
}
export type ListSnapshotsRequest = Record<string, never>;

/** The response of CreateVolume, ResizeVolume, GetVolume and CloneVolume. */
export interface VolumeResponse {
  volume: WireVolume | null;
}
export type DeleteVolumeResponse = Record<string, never>;
export interface ListVolumesResponse {
  volumes: WireVolume[];
}

/** The response of CreateSnapshot and GetSnapshot. */
export interface SnapshotResponse {
  snapshot: WireSnapshot | null;
}
export type DeleteSnapshotResponse = Record<string, never>;
export interface ListSnapshotsResponse {
  snapshots: WireSnapshot[];
}

export interface GetStatsResponse {
  logicalBytes: WireInt64;
  physicalBytes: WireInt64;
  savedByClonesBytes: WireInt64;
  savedByDedupBytes: WireInt64;
  deadBytes: WireInt64;
  capacityBytes: WireInt64;
  writesPerBatch: number;
  flushesPerFdatasync: number;
  batches: WireInt64;
  fdatasyncs: WireInt64;
  volumes: number;
  readOnly: boolean;
  segments: number;
  segmentsCleaned: WireInt64;
  blocksRelocated: WireInt64;
  segmentsDamaged: WireInt64;
  checksumFailures: WireInt64;
  cacheBytes: WireInt64;
  cacheHits: WireInt64;
  cacheMisses: WireInt64;
  dedupReferencedBlocks: WireInt64;
  /** '' (the proto3 default) while the pool is writable. */
  readOnlyReason: string;
}

/**
 * A decoded 64-bit field as a number, or undefined when it is not a non-negative safe integer.
 * Accepts numbers too, since protobufjs may hand those over when a sender used them.
 */
export function toSafeInteger(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : undefined;
  if (typeof value !== 'string' || !/^\d{1,16}$/.test(value)) return undefined;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** A number the engine produced, as a wire int64. Engine numbers are safe integers by contract. */
export function toWireInt64(value: number, field: string): WireInt64 {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(`engine produced ${field}=${value}, not a non-negative safe integer`);
  }
  return String(value);
}

export function toWireVolume(v: VolumeInfo): WireVolume {
  return {
    name: v.name,
    sizeBytes: toWireInt64(v.sizeBytes, 'sizeBytes'),
    allocatedBytes: toWireInt64(v.allocatedBytes, 'allocatedBytes'),
    createdAtMs: toWireInt64(v.createdAtMs, 'createdAtMs'),
    openHandles: v.openHandles,
  };
}

export function toWireSnapshot(s: SnapshotInfo): WireSnapshot {
  return {
    name: s.name,
    sourceVolume: s.sourceVolume,
    sizeBytes: toWireInt64(s.sizeBytes, 'sizeBytes'),
    allocatedBytes: toWireInt64(s.allocatedBytes, 'allocatedBytes'),
    createdAtMs: toWireInt64(s.createdAtMs, 'createdAtMs'),
  };
}

export function toWireStats(s: PoolStats): GetStatsResponse {
  return {
    logicalBytes: toWireInt64(s.logicalBytes, 'logicalBytes'),
    physicalBytes: toWireInt64(s.physicalBytes, 'physicalBytes'),
    savedByClonesBytes: toWireInt64(s.savedByClonesBytes, 'savedByClonesBytes'),
    savedByDedupBytes: toWireInt64(s.savedByDedupBytes, 'savedByDedupBytes'),
    deadBytes: toWireInt64(s.deadBytes, 'deadBytes'),
    capacityBytes: toWireInt64(s.capacityBytes, 'capacityBytes'),
    writesPerBatch: s.writesPerBatch,
    flushesPerFdatasync: s.flushesPerFdatasync,
    batches: toWireInt64(s.batches, 'batches'),
    fdatasyncs: toWireInt64(s.fdatasyncs, 'fdatasyncs'),
    volumes: s.volumes,
    readOnly: s.readOnly,
    segments: s.segments,
    segmentsCleaned: toWireInt64(s.segmentsCleaned, 'segmentsCleaned'),
    blocksRelocated: toWireInt64(s.blocksRelocated, 'blocksRelocated'),
    segmentsDamaged: toWireInt64(s.segmentsDamaged, 'segmentsDamaged'),
    checksumFailures: toWireInt64(s.checksumFailures, 'checksumFailures'),
    cacheBytes: toWireInt64(s.cacheBytes, 'cacheBytes'),
    cacheHits: toWireInt64(s.cacheHits, 'cacheHits'),
    cacheMisses: toWireInt64(s.cacheMisses, 'cacheMisses'),
    dedupReferencedBlocks: toWireInt64(s.dedupReferencedBlocks, 'dedupReferencedBlocks'),
    readOnlyReason: s.readOnlyReason ?? '',
  };
}

/** Thrown by the client when the server sent something this client cannot represent. */
export class WireFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireFormatError';
  }
}

function int64Field(value: unknown, field: string): number {
  const n = toSafeInteger(value);
  if (n === undefined) throw new WireFormatError(`engine sent ${field}=${String(value)}, beyond what this client can represent exactly`);
  return n;
}

export function fromWireVolume(v: WireVolume | null | undefined): VolumeInfo {
  if (v === null || v === undefined) throw new WireFormatError('engine sent a response without its volume');
  return {
    name: v.name,
    sizeBytes: int64Field(v.sizeBytes, 'sizeBytes'),
    allocatedBytes: int64Field(v.allocatedBytes, 'allocatedBytes'),
    createdAtMs: int64Field(v.createdAtMs, 'createdAtMs'),
    openHandles: v.openHandles,
  };
}

export function fromWireSnapshot(s: WireSnapshot | null | undefined): SnapshotInfo {
  if (s === null || s === undefined) throw new WireFormatError('engine sent a response without its snapshot');
  return {
    name: s.name,
    sourceVolume: s.sourceVolume,
    sizeBytes: int64Field(s.sizeBytes, 'sizeBytes'),
    allocatedBytes: int64Field(s.allocatedBytes, 'allocatedBytes'),
    createdAtMs: int64Field(s.createdAtMs, 'createdAtMs'),
  };
}

export function fromWireStats(s: GetStatsResponse): PoolStats {
  return {
    logicalBytes: int64Field(s.logicalBytes, 'logicalBytes'),
    physicalBytes: int64Field(s.physicalBytes, 'physicalBytes'),
    savedByClonesBytes: int64Field(s.savedByClonesBytes, 'savedByClonesBytes'),
    savedByDedupBytes: int64Field(s.savedByDedupBytes, 'savedByDedupBytes'),
    deadBytes: int64Field(s.deadBytes, 'deadBytes'),
    capacityBytes: int64Field(s.capacityBytes, 'capacityBytes'),
    writesPerBatch: s.writesPerBatch,
    flushesPerFdatasync: s.flushesPerFdatasync,
    batches: int64Field(s.batches, 'batches'),
    fdatasyncs: int64Field(s.fdatasyncs, 'fdatasyncs'),
    volumes: s.volumes,
    readOnly: s.readOnly,
    segments: s.segments,
    segmentsCleaned: int64Field(s.segmentsCleaned, 'segmentsCleaned'),
    blocksRelocated: int64Field(s.blocksRelocated, 'blocksRelocated'),
    segmentsDamaged: int64Field(s.segmentsDamaged, 'segmentsDamaged'),
    checksumFailures: int64Field(s.checksumFailures, 'checksumFailures'),
    cacheBytes: int64Field(s.cacheBytes, 'cacheBytes'),
    cacheHits: int64Field(s.cacheHits, 'cacheHits'),
    cacheMisses: int64Field(s.cacheMisses, 'cacheMisses'),
    dedupReferencedBlocks: int64Field(s.dedupReferencedBlocks, 'dedupReferencedBlocks'),
    ...(s.readOnlyReason ? { readOnlyReason: s.readOnlyReason } : {}),
  };
}
