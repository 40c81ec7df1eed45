/**
 * TypeScript shapes of the Node service's csi.proto messages, in the same conventions as
 * csi/messages.ts (camelCase, enums by name, int64 as decimal strings, every request field
 * present after decoding). Kept apart so that the Node service owns its own wire types.
 */
import type { CapacityRange, StringMap, Topology, VolumeCapability, VolumeCondition, WireInt64 } from './messages.ts';

export interface NodeStageVolumeRequest {
  volumeId: string;
  publishContext: StringMap;
  stagingTargetPath: string;
  volumeCapability: VolumeCapability | null;
  secrets: StringMap;
  volumeContext: StringMap;
}
export type NodeStageVolumeResponse = Record<string, never>;

export interface NodeUnstageVolumeRequest {
  volumeId: string;
  stagingTargetPath: string;
}
export type NodeUnstageVolumeResponse = Record<string, never>;

export interface NodePublishVolumeRequest {
  volumeId: string;
  publishContext: StringMap;
  stagingTargetPath: string;
  targetPath: string;
  volumeCapability: VolumeCapability | null;
  readonly: boolean;
  secrets: StringMap;
  volumeContext: StringMap;
}
export type NodePublishVolumeResponse = Record<string, never>;

export interface NodeUnpublishVolumeRequest {
  volumeId: string;
  targetPath: string;
}
export type NodeUnpublishVolumeResponse = Record<string, never>;

export interface NodeGetVolumeStatsRequest {
  volumeId: string;
  volumePath: string;
  stagingTargetPath: string;
}
export interface VolumeUsage {
  available?: WireInt64;
  total: WireInt64;
  used?: WireInt64;
  unit: 'BYTES' | 'INODES';
}
export interface NodeGetVolumeStatsResponse {
  usage: VolumeUsage[];
  volumeCondition: VolumeCondition;
}

export interface NodeExpandVolumeRequest {
  volumeId: string;
  volumePath: string;
  capacityRange: CapacityRange | null;
  stagingTargetPath: string;
  volumeCapability: VolumeCapability | null;
  secrets: StringMap;
}
export interface NodeExpandVolumeResponse {
  capacityBytes: WireInt64;
}

export type NodeCapabilityName = 'STAGE_UNSTAGE_VOLUME' | 'GET_VOLUME_STATS' | 'EXPAND_VOLUME' | 'VOLUME_CONDITION';
export interface NodeGetCapabilitiesResponse {
  capabilities: { rpc: { type: NodeCapabilityName } }[];
}

export interface NodeGetInfoResponse {
  nodeId: string;
  maxVolumesPerNode: WireInt64;
  accessibleTopology: Topology;
}
