/**
 * TypeScript shapes of the csi.proto messages Braid handles, as proto-loader presents them with
 * CSI_PROTO_LOADER_OPTIONS (csi/proto.ts): camelCase field names, enums as their names, int64 as
 * decimal strings, and, for decoded requests, every field present (absent sub-messages are null,
 * absent maps `{}`, absent lists `[]`). Responses we build may leave optional fields out.
 * A oneof also shows up as a virtual field naming its set member (e.g. `accessType: 'block'`).
 */

/** An int64/uint64 field: a decimal string (see csi/proto.ts). */
export type WireInt64 = string;

export type StringMap = Record<string, string>;

export interface Timestamp {
  seconds: WireInt64;
  nanos: number;
}

// ---- shared ---------------------------------------------------------------------------------

export type AccessModeName =
  | 'UNKNOWN'
  | 'SINGLE_NODE_WRITER'
  | 'SINGLE_NODE_READER_ONLY'
  | 'MULTI_NODE_READER_ONLY'
  | 'MULTI_NODE_SINGLE_WRITER'
  | 'MULTI_NODE_MULTI_WRITER'
  | 'SINGLE_NODE_SINGLE_WRITER'
  | 'SINGLE_NODE_MULTI_WRITER';

export interface VolumeCapability {
  block?: Record<string, never> | null;
  mount?: { fsType: string; mountFlags: string[]; volumeMountGroup: string } | null;
  // A number when a newer CO sends a mode this proto does not know.
  accessMode: { mode: AccessModeName | number } | null;
  accessType?: 'block' | 'mount';
}

export interface CapacityRange {
  requiredBytes: WireInt64;
  limitBytes: WireInt64;
}

export interface Topology {
  segments: StringMap;
}

export interface TopologyRequirement {
  requisite: Topology[];
  preferred: Topology[];
}

export interface VolumeContentSource {
  snapshot?: { snapshotId: string } | null;
  volume?: { volumeId: string } | null;
  type?: 'snapshot' | 'volume';
}

export interface Volume {
  capacityBytes: WireInt64;
  volumeId: string;
  volumeContext: StringMap;
  contentSource?: VolumeContentSource;
  accessibleTopology: Topology[];
}

export interface VolumeCondition {
  abnormal: boolean;
  message: string;
}

export interface Snapshot {
  sizeBytes: WireInt64;
  snapshotId: string;
  sourceVolumeId: string;
  creationTime: Timestamp;
  readyToUse: boolean;
}

// ---- Identity -------------------------------------------------------------------------------

export type GetPluginInfoRequest = Record<string, never>;
export interface GetPluginInfoResponse {
  name: string;
  vendorVersion: string;
  manifest?: StringMap;
}

export type GetPluginCapabilitiesRequest = Record<string, never>;
export type PluginCapability =
  | { service: { type: 'CONTROLLER_SERVICE' | 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } }
  | { volumeExpansion: { type: 'ONLINE' | 'OFFLINE' } };
export interface GetPluginCapabilitiesResponse {
  capabilities: PluginCapability[];
}

export type ProbeRequest = Record<string, never>;
export interface ProbeResponse {
  ready: { value: boolean };
}

// ---- Controller -----------------------------------------------------------------------------

export interface CreateVolumeRequest {
  name: string;
  capacityRange: CapacityRange | null;
  volumeCapabilities: VolumeCapability[];
  parameters: StringMap;
  secrets: StringMap;
  volumeContentSource: VolumeContentSource | null;
  accessibilityRequirements: TopologyRequirement | null;
  mutableParameters: StringMap;
}
export interface CreateVolumeResponse {
  volume: Volume;
}

export interface DeleteVolumeRequest {
  volumeId: string;
  secrets: StringMap;
}
export type DeleteVolumeResponse = Record<string, never>;

export interface ValidateVolumeCapabilitiesRequest {
  volumeId: string;
  volumeContext: StringMap;
  volumeCapabilities: VolumeCapability[];
  parameters: StringMap;
  secrets: StringMap;
  mutableParameters: StringMap;
}
export interface ValidateVolumeCapabilitiesResponse {
  confirmed?: { volumeContext: StringMap; volumeCapabilities: VolumeCapability[]; parameters: StringMap };
  message?: string;
}

export interface ListVolumesRequest {
  maxEntries: number;
  startingToken: string;
}
export interface ListVolumesResponse {
  entries: { volume: Volume; status: { volumeCondition: VolumeCondition } }[];
  nextToken: string;
}

export interface ControllerGetVolumeRequest {
  volumeId: string;
}
export interface ControllerGetVolumeResponse {
  volume: Volume;
  status: { volumeCondition: VolumeCondition };
}

export interface GetCapacityRequest {
  volumeCapabilities: VolumeCapability[];
  parameters: StringMap;
  accessibleTopology: Topology | null;
}
export interface GetCapacityResponse {
  availableCapacity: WireInt64;
  maximumVolumeSize?: { value: WireInt64 };
}

export type ControllerCapabilityName =
  | 'CREATE_DELETE_VOLUME'
  | 'CREATE_DELETE_SNAPSHOT'
  | 'LIST_SNAPSHOTS'
  | 'CLONE_VOLUME'
  | 'EXPAND_VOLUME'
  | 'GET_CAPACITY'
  | 'LIST_VOLUMES'
  | 'GET_VOLUME'
  | 'VOLUME_CONDITION';
export type ControllerGetCapabilitiesRequest = Record<string, never>;
export interface ControllerGetCapabilitiesResponse {
  capabilities: { rpc: { type: ControllerCapabilityName } }[];
}

export interface ControllerExpandVolumeRequest {
  volumeId: string;
  capacityRange: CapacityRange | null;
  secrets: StringMap;
  volumeCapability: VolumeCapability | null;
}
export interface ControllerExpandVolumeResponse {
  capacityBytes: WireInt64;
  nodeExpansionRequired: boolean;
}

export interface CreateSnapshotRequest {
  sourceVolumeId: string;
  name: string;
  secrets: StringMap;
  parameters: StringMap;
}
export interface CreateSnapshotResponse {
  snapshot: Snapshot;
}

export interface DeleteSnapshotRequest {
  snapshotId: string;
  secrets: StringMap;
}
export type DeleteSnapshotResponse = Record<string, never>;

export interface ListSnapshotsRequest {
  maxEntries: number;
  startingToken: string;
  sourceVolumeId: string;
  snapshotId: string;
  secrets: StringMap;
}
export interface ListSnapshotsResponse {
  entries: { snapshot: Snapshot }[];
  nextToken: string;
}
