/**
 * Validation of Node requests: everything that can be checked without touching the machine, so
 * that a malformed request never takes a lock (csi-driver-host-path's order). Missing or
 * malformed fields are INVALID_ARGUMENT; paths must be absolute (the spec says so for every
 * path field) and are normalised, because records and the mount table compare them as strings.
 */
import { isAbsolute, resolve } from 'node:path';
import { status } from '@grpc/grpc-js';
import { checkExportName } from './attach/export-name.ts';
import type { VolumeCapability } from './messages.ts';
import type { FsType } from './mount/filesystem.ts';
import type { NodeExpandVolumeRequest, NodePublishVolumeRequest, NodeStageVolumeRequest } from './node-messages.ts';
import { CsiError } from './status.ts';
import { parseCapability, unsupportedReason, DEFAULT_FS_TYPE } from './volume-capability.ts';
import type { AccessType } from './volume-capability.ts';
import { CONTEXT_EXPORT_NAME, CONTEXT_NBD_SOCKET } from './volume-context.ts';
import { parseCapacityRange } from './capacity.ts';
import type { SizeRange } from './capacity.ts';

/** A capability as the node uses it. */
export interface NodeCapability {
  accessType: AccessType;
  /** The filesystem for mount ('' in the request means ext4); null for block. */
  fsType: FsType | null;
  /** True when the request named the filesystem (publish accepts any staged one otherwise). */
  fsTypeGiven: boolean;
  mountFlags: string[];
  /** A read-only access mode (SINGLE_NODE_READER_ONLY). */
  readOnlyMode: boolean;
}

export interface StageSpec extends NodeCapability {
  volumeId: string;
  stagingPath: string;
  exportName: string;
  socketPath: string;
}

export interface PublishSpec {
  volumeId: string;
  stagingPath: string;
  targetPath: string;
  capability: NodeCapability;
  readOnly: boolean;
  exportName: string;
  socketPath: string;
}

export interface ExpandSpec {
  volumeId: string;
  volumePath: string;
  range: SizeRange;
  capability: NodeCapability | undefined;
}

export function parseStage(req: NodeStageVolumeRequest, defaultSocketPath: string | undefined): StageSpec {
  const volumeId = required(req.volumeId, 'volume_id');
  const stagingPath = absolutePath(req.stagingTargetPath, 'staging_target_path');
  const capability = nodeCapability(req.volumeCapability, 'volume_capability');
  return { volumeId, stagingPath, ...capability, ...exportOf(volumeId, req.volumeContext, defaultSocketPath) };
}

export function parsePublish(req: NodePublishVolumeRequest, defaultSocketPath: string | undefined): PublishSpec {
  const volumeId = required(req.volumeId, 'volume_id');
  return {
    volumeId,
    // REQUIRED here because the plugin has STAGE_UNSTAGE_VOLUME.
    stagingPath: absolutePath(req.stagingTargetPath, 'staging_target_path'),
    targetPath: absolutePath(req.targetPath, 'target_path'),
    capability: nodeCapability(req.volumeCapability, 'volume_capability'),
    readOnly: req.readonly,
    ...exportOf(volumeId, req.volumeContext, defaultSocketPath),
  };
}

export function parseExpand(req: NodeExpandVolumeRequest): ExpandSpec {
  return {
    volumeId: required(req.volumeId, 'volume_id'),
    volumePath: absolutePath(req.volumePath, 'volume_path'),
    range: parseCapacityRange(req.capacityRange, 'capacity_range'),
    capability: req.volumeCapability === null ? undefined : nodeCapability(req.volumeCapability, 'volume_capability'),
  };
}

export function nodeCapability(cap: VolumeCapability | null, field: string): NodeCapability {
  const parsed = parseCapability(cap, field);
  const reason = unsupportedReason(parsed);
  if (reason !== undefined) throw new CsiError(status.INVALID_ARGUMENT, `${field}: ${reason}`);
  const readOnlyMode = parsed.mode === 'SINGLE_NODE_READER_ONLY';
  if (parsed.accessType === 'block') return { accessType: 'block', fsType: null, fsTypeGiven: false, mountFlags: [], readOnlyMode };
  const fsType = (parsed.fsType === '' ? DEFAULT_FS_TYPE : parsed.fsType) as FsType;
  return { accessType: 'mount', fsType, fsTypeGiven: parsed.fsType !== '', mountFlags: [...(cap?.mount?.mountFlags ?? [])], readOnlyMode };
}

/**
 * The export and the socket that serve the volume: from the volume context CreateVolume wrote,
 * or, for a context without them (a volume created by hand, an older driver), the volume ID
 * and this node's engine.
 */
function exportOf(volumeId: string, context: Record<string, string>, defaultSocketPath: string | undefined): { exportName: string; socketPath: string } {
  const named = context[CONTEXT_EXPORT_NAME];
  if (named !== undefined && named !== '') {
    if (!isExportName(named)) throw new CsiError(status.INVALID_ARGUMENT, `volume_context[${CONTEXT_EXPORT_NAME}] ${JSON.stringify(named)} is not an export name`);
  } else if (!isExportName(volumeId)) {
    throw new CsiError(status.NOT_FOUND, `volume ${JSON.stringify(volumeId)} is not a Braid volume ID`);
  }
  const socket = context[CONTEXT_NBD_SOCKET] ?? defaultSocketPath;
  if (socket === undefined || socket === '') {
    throw new CsiError(status.INVALID_ARGUMENT, `volume_context has no ${CONTEXT_NBD_SOCKET} and this node has no default engine`);
  }
  return { exportName: named !== undefined && named !== '' ? named : volumeId, socketPath: absolutePath(socket, `volume_context[${CONTEXT_NBD_SOCKET}]`) };
}

function isExportName(name: string): boolean {
  try {
    checkExportName(name);
    return true;
  } catch {
    return false;
  }
}

/** A REQUIRED string field. */
export function required(value: string, field: string): string {
  if (value === '') throw new CsiError(status.INVALID_ARGUMENT, `${field} is required`);
  return value;
}

/** A REQUIRED absolute path, normalised (no trailing slash, no `..`). */
export function absolutePath(value: string, field: string): string {
  required(value, field);
  if (!isAbsolute(value)) throw new CsiError(status.INVALID_ARGUMENT, `${field} must be an absolute path, not ${JSON.stringify(value)}`);
  if (value.includes('\0')) throw new CsiError(status.INVALID_ARGUMENT, `${field} contains a NUL byte`);
  return resolve(value);
}
