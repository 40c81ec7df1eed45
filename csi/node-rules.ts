/**
 * The Node service's decisions that need no machine: when a repeated stage or publish is the
 * same request (idempotent OK) or a different one (ALREADY_EXISTS, INVALID_ARGUMENT), which
 * mount options a staging mount gets, when a block device must be read-only, and the record
 * updates. Pure functions, unit-tested on their own.
 */
import { status } from '@grpc/grpc-js';
import type { PublishSpec, StageSpec } from './node-requests.ts';
import { NODE_RECORD_VERSION } from './node-state.ts';
import type { StagedVolume } from './node-state.ts';
import { CsiError } from './status.ts';

export function newRecord(spec: StageSpec): StagedVolume {
  return {
    version: NODE_RECORD_VERSION,
    volumeId: spec.volumeId,
    exportName: spec.exportName,
    socketPath: spec.socketPath,
    stagingPath: spec.stagingPath,
    accessType: spec.accessType,
    fsType: spec.fsType,
    mountFlags: spec.mountFlags,
    readOnly: spec.readOnlyMode,
    devicePath: null,
    published: [],
  };
}

/**
 * A stage of a volume that is already staged: the same request again is fine; another
 * capability at the same path is ALREADY_EXISTS (the spec's "staged but incompatible"); another
 * staging path is FAILED_PRECONDITION (the CO guarantees one per volume: this one must be
 * unstaged first).
 */
export function checkStageCompatible(existing: StagedVolume, spec: StageSpec): void {
  if (existing.stagingPath !== spec.stagingPath) {
    throw new CsiError(status.FAILED_PRECONDITION, `volume ${spec.volumeId} is already staged at ${existing.stagingPath}: unstage it there first`);
  }
  const conflict = stageConflict(existing, spec);
  if (conflict !== undefined) {
    throw new CsiError(status.ALREADY_EXISTS, `volume ${spec.volumeId} is already staged at ${spec.stagingPath} with ${conflict}`);
  }
}

function stageConflict(existing: StagedVolume, spec: StageSpec): string | undefined {
  if (existing.exportName !== spec.exportName) return `export ${existing.exportName}`;
  if (existing.socketPath !== spec.socketPath) return `the engine at ${existing.socketPath}`;
  if (existing.accessType !== spec.accessType) return `access type ${existing.accessType}`;
  if (existing.fsType !== spec.fsType) return `filesystem ${existing.fsType}`;
  if (!sameFlags(existing.mountFlags, spec.mountFlags)) return 'other mount flags';
  if (existing.readOnly !== spec.readOnlyMode) return existing.readOnly ? 'a read-only access mode' : 'a writable access mode';
  return undefined;
}

function sameFlags(a: readonly string[], b: readonly string[]): boolean {
  const sa = [...new Set(a)].sort();
  const sb = [...new Set(b)].sort();
  return sa.length === sb.length && sa.every((flag, i) => flag === sb[i]);
}

/** A publish must use the access type (and, if it names one, the filesystem) the volume was staged with. */
export function checkPublishCompatible(record: StagedVolume, spec: PublishSpec): void {
  const cap = spec.capability;
  if (cap.accessType !== record.accessType) {
    throw new CsiError(status.INVALID_ARGUMENT, `volume ${spec.volumeId} is staged as ${record.accessType} and cannot be published as ${cap.accessType}`);
  }
  if (cap.fsTypeGiven && cap.fsType !== record.fsType) {
    throw new CsiError(status.INVALID_ARGUMENT, `volume ${spec.volumeId} is staged with ${record.fsType}, not ${cap.fsType}`);
  }
  if (record.exportName !== spec.exportName) {
    throw new CsiError(status.INVALID_ARGUMENT, `volume ${spec.volumeId} is staged from export ${record.exportName}, not ${spec.exportName}`);
  }
}

/**
 * Options of the staging mount: the CO's mount flags; `nouuid` for xfs, because a clone carries
 * its source's filesystem UUID and xfs refuses to mount a second filesystem with a UUID already
 * mounted; `ro` for a read-only access mode.
 */
export function mountOptions(record: StagedVolume): string[] {
  const options = [...record.mountFlags];
  if (record.fsType === 'xfs') options.push('nouuid');
  if (record.readOnly) options.push('ro');
  return [...new Set(options)];
}

/**
 * Whether a publish is read-only: when asked, and whenever the staging mount is read-only (a
 * read-only mode, or an `ro` mount flag), because a bind of a read-only mount is read-only
 * whatever it asks, and a retried publish must find what it expects.
 */
export function publishReadOnly(record: StagedVolume, requested: boolean): boolean {
  return requested || record.readOnly || (record.accessType === 'mount' && record.mountFlags.includes('ro'));
}

/**
 * Whether a block volume's device must be read-only: staged for a read-only mode, or published
 * only read-only. A device is one object for all its publishes, so one writable publish makes
 * it writable for all of them: a read-only bind of a device node does not stop writes (the
 * kernel checks the mount flag for files and directories only), so this flag is the one guard.
 */
export function blockReadOnly(record: StagedVolume): boolean {
  return record.readOnly || (record.published.length > 0 && record.published.every((t) => t.readOnly));
}

export function withDevice(record: StagedVolume, devicePath: string): StagedVolume {
  return { ...record, devicePath };
}

export function withTarget(record: StagedVolume, targetPath: string, readOnly: boolean): StagedVolume {
  return { ...record, published: [...record.published.filter((t) => t.targetPath !== targetPath), { targetPath, readOnly }] };
}

export function withoutTarget(record: StagedVolume, targetPath: string): StagedVolume {
  return { ...record, published: record.published.filter((t) => t.targetPath !== targetPath) };
}
