/**
 * Volume capabilities: how the CO means to use a volume (block device or filesystem) and from
 * where (access mode). Braid serves a volume from one node's engine, so it supports the
 * single-node modes only, for now; MULTI_NODE_* (KubeVirt live migration, RWX block) waits for
 * NBD over TLS between nodes (DESIGN.md §8).
 *
 * Two kinds of "no": a malformed capability (no access type, no access mode) is INVALID_ARGUMENT
 * wherever it appears; a well-formed one we do not support gets a reason string, which each RPC
 * turns into its own answer (CreateVolume: INVALID_ARGUMENT; ValidateVolumeCapabilities: not
 * confirmed; GetCapacity: no capacity).
 */
import { status } from '@grpc/grpc-js';
import type { AccessModeName, VolumeCapability } from './messages.ts';
import { CsiError } from './status.ts';

export type AccessType = 'block' | 'mount';

export interface ParsedCapability {
  accessType: AccessType;
  /** The mode's name; a number when a newer CO sends a mode this proto does not know. */
  mode: AccessModeName | number;
  /** For mount: the requested filesystem, '' for the default. */
  fsType: string;
}

/** Filesystems the node plugin can create and mount; '' means DEFAULT_FS_TYPE. */
export const SUPPORTED_FS_TYPES: readonly string[] = ['ext4', 'xfs'];
export const DEFAULT_FS_TYPE = 'ext4';

const SUPPORTED_MODES: ReadonlySet<AccessModeName | number> = new Set<AccessModeName>([
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
  'SINGLE_NODE_READER_ONLY',
]);

/** A capability list that the spec marks REQUIRED: at least one, each well-formed. */
export function parseCapabilities(caps: readonly (VolumeCapability | null)[], field: string): ParsedCapability[] {
  if (caps.length === 0) throw new CsiError(status.INVALID_ARGUMENT, `${field} is required`);
  return caps.map((cap, i) => parseCapability(cap, `${field}[${i}]`));
}

export function parseCapability(cap: VolumeCapability | null, field: string): ParsedCapability {
  if (cap === null) throw new CsiError(status.INVALID_ARGUMENT, `${field} is required`);
  const mount = cap.mount ?? null;
  const accessType: AccessType | undefined = cap.block != null ? 'block' : mount !== null ? 'mount' : undefined;
  if (accessType === undefined) throw new CsiError(status.INVALID_ARGUMENT, `${field}: access_type (block or mount) is required`);
  const mode = cap.accessMode?.mode;
  if (mode === undefined || mode === 'UNKNOWN' || mode === 0) {
    throw new CsiError(status.INVALID_ARGUMENT, `${field}: access_mode is required`);
  }
  return { accessType, mode, fsType: mount?.fsType ?? '' };
}

/** Why Braid cannot serve a volume with this capability, or undefined when it can. */
export function unsupportedReason(cap: ParsedCapability): string | undefined {
  if (!SUPPORTED_MODES.has(cap.mode)) {
    return `access mode ${String(cap.mode)} is not supported: a Braid volume is served by one node (single-node modes only)`;
  }
  if (cap.accessType === 'mount' && cap.fsType !== '' && !SUPPORTED_FS_TYPES.includes(cap.fsType)) {
    return `filesystem ${JSON.stringify(cap.fsType)} is not supported (use ${SUPPORTED_FS_TYPES.join(' or ')})`;
  }
  return undefined;
}

/** The first reason any capability in the list is unsupported. */
export function firstUnsupported(caps: readonly ParsedCapability[]): string | undefined {
  for (const cap of caps) {
    const reason = unsupportedReason(cap);
    if (reason !== undefined) return reason;
  }
  return undefined;
}
