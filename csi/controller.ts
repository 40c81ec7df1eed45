/**
 * The CSI Controller service: volumes, snapshots, clones, expansion and capacity, backend-neutral.
 *
 * Every mutating RPC follows csi-driver-host-path's recipe: validate (everything that needs no
 * storage, so a bad request never takes a lock) -> lock the name and the ID (ABORTED when
 * another operation holds them) -> look the object up by its deterministic ID -> if it exists
 * and is compatible, answer as if we had just created it; if it is incompatible,
 * ALREADY_EXISTS -> otherwise create it. The storage operations themselves are atomic in the
 * engine, so there is no half-done create to roll back.
 *
 * ControllerPublishVolume / ControllerUnpublishVolume / ControllerModifyVolume are absent on
 * purpose: the server answers UNIMPLEMENTED, matching the capabilities we report (an NBD export
 * needs no controller-side attach).
 */
import { status } from '@grpc/grpc-js';
import { parseCapacityRange, resolveSize, roundUpToBlock, sizeSatisfies, describe, type SizeRange } from './capacity.ts';
import type { BackendVolume, ContentSource, ControllerBackend } from './controller-backend.ts';
import { lockKey, OperationLocks } from './locks.ts';
import type {
  ControllerCapabilityName,
  ControllerExpandVolumeRequest,
  ControllerExpandVolumeResponse,
  ControllerGetCapabilitiesResponse,
  ControllerGetVolumeRequest,
  ControllerGetVolumeResponse,
  CreateSnapshotRequest,
  CreateSnapshotResponse,
  CreateVolumeRequest,
  CreateVolumeResponse,
  DeleteSnapshotRequest,
  DeleteSnapshotResponse,
  DeleteVolumeRequest,
  DeleteVolumeResponse,
  GetCapacityRequest,
  GetCapacityResponse,
  ListSnapshotsRequest,
  ListSnapshotsResponse,
  ListVolumesRequest,
  ListVolumesResponse,
  Topology,
  TopologyRequirement,
  ValidateVolumeCapabilitiesRequest,
  ValidateVolumeCapabilitiesResponse,
  VolumeContentSource,
} from './messages.ts';
import { byKey, paginate } from './pagination.ts';
import { parseSnapshotParameters, parseVolumeParameters, volumeParametersProblem, type VolumeParameters } from './parameters.ts';
import { toWireInt64 } from './proto.ts';
import { CsiError } from './status.ts';
import { requirementAllows } from './topology.ts';
import { firstUnsupported, parseCapabilities, parseCapability } from './volume-capability.ts';
import { toWireSnapshot, toWireVolume } from './wire.ts';

export const CONTROLLER_CAPABILITIES: readonly ControllerCapabilityName[] = [
  'CREATE_DELETE_VOLUME',
  'CREATE_DELETE_SNAPSHOT',
  'LIST_SNAPSHOTS',
  'CLONE_VOLUME',
  'EXPAND_VOLUME',
  'GET_CAPACITY',
  'LIST_VOLUMES',
  'GET_VOLUME',
  'VOLUME_CONDITION',
];

export interface ControllerOptions {
  backend: ControllerBackend;
  /** Shared with other services of the process that touch the same volumes; fresh by default. */
  locks?: OperationLocks;
}

/** A CreateVolume request after validation. */
interface CreateSpec {
  name: string;
  range: SizeRange;
  params: VolumeParameters;
  source: ContentSource | undefined;
  requirement: TopologyRequirement | null;
}

export class ControllerService {
  readonly #backend: ControllerBackend;
  readonly #locks: OperationLocks;

  constructor(opts: ControllerOptions) {
    this.#backend = opts.backend;
    this.#locks = opts.locks ?? new OperationLocks();
  }

  async controllerGetCapabilities(): Promise<ControllerGetCapabilitiesResponse> {
    return { capabilities: CONTROLLER_CAPABILITIES.map((type) => ({ rpc: { type } })) };
  }

  // ---- volumes ------------------------------------------------------------------------------

  async createVolume(req: CreateVolumeRequest): Promise<CreateVolumeResponse> {
    const spec = validateCreateVolume(req);
    const volumeId = this.#backend.volumeIdFor(spec.name);
    const keys = [lockKey('volume-name', spec.name), lockKey('volume-id', volumeId)];
    const volume = await this.#locks.run(keys, () => this.#createOrReuse(volumeId, spec));
    return { volume: toWireVolume(volume) };
  }

  async #createOrReuse(volumeId: string, spec: CreateSpec): Promise<BackendVolume> {
    const existing = await this.#backend.getVolume(volumeId);
    if (existing !== undefined) {
      checkCompatible(existing, spec);
      return existing;
    }
    const floorBytes = await this.#sourceSize(spec.source);
    const sizeBytes = resolveSize(spec.range, floorBytes);
    const topology = this.#placement(spec.requirement);
    return this.#backend.createVolume({ volumeId, sizeBytes, dedup: spec.params.dedup, dedupDomain: spec.params.dedupDomain, source: spec.source, topology });
  }

  /** The size of a clone's source: the clone's smallest size. NOT_FOUND when it is missing. */
  async #sourceSize(source: ContentSource | undefined): Promise<number> {
    if (source === undefined) return 0;
    if (source.kind === 'snapshot') {
      const snapshot = await this.#backend.getSnapshot(source.id);
      if (snapshot === undefined) throw new CsiError(status.NOT_FOUND, `source snapshot ${source.id} not found`);
      return snapshot.sizeBytes;
    }
    const volume = await this.#backend.getVolume(source.id);
    if (volume === undefined) throw new CsiError(status.NOT_FOUND, `source volume ${source.id} not found`);
    return volume.capacityBytes;
  }

  /** The first place the backend offers that the requirement accepts (preferred order is moot: one node). */
  #placement(requirement: TopologyRequirement | null): Topology {
    const topology = this.#backend.topologies().find((t) => requirementAllows(requirement, t));
    if (topology === undefined) {
      throw new CsiError(status.RESOURCE_EXHAUSTED, 'cannot provision a volume accessible from the requested topology');
    }
    return topology;
  }

  async deleteVolume(req: DeleteVolumeRequest): Promise<DeleteVolumeResponse> {
    const volumeId = required(req.volumeId, 'volume_id');
    await this.#locks.run([lockKey('volume-id', volumeId)], () => this.#backend.deleteVolume(volumeId));
    return {};
  }

  async controllerGetVolume(req: ControllerGetVolumeRequest): Promise<ControllerGetVolumeResponse> {
    const volume = await this.#existingVolume(required(req.volumeId, 'volume_id'));
    return { volume: toWireVolume(volume), status: { volumeCondition: volume.condition } };
  }

  async listVolumes(req: ListVolumesRequest): Promise<ListVolumesResponse> {
    const volumes = (await this.#backend.listVolumes()).sort(byKey((v) => v.volumeId));
    const page = paginate(volumes, (v) => v.volumeId, req.maxEntries, req.startingToken);
    const entries = page.entries.map((v) => ({ volume: toWireVolume(v), status: { volumeCondition: v.condition } }));
    return { entries, nextToken: page.nextToken };
  }

  async validateVolumeCapabilities(req: ValidateVolumeCapabilitiesRequest): Promise<ValidateVolumeCapabilitiesResponse> {
    const volumeId = required(req.volumeId, 'volume_id');
    const caps = parseCapabilities(req.volumeCapabilities, 'volume_capabilities');
    await this.#existingVolume(volumeId);
    const problem =
      firstUnsupported(caps) ??
      volumeParametersProblem(req.parameters) ??
      (Object.keys(req.mutableParameters).length > 0 ? 'mutable_parameters are not supported (no MODIFY_VOLUME)' : undefined);
    if (problem !== undefined) return { message: problem };
    return { confirmed: { volumeContext: req.volumeContext, volumeCapabilities: req.volumeCapabilities, parameters: req.parameters } };
  }

  async controllerExpandVolume(req: ControllerExpandVolumeRequest): Promise<ControllerExpandVolumeResponse> {
    const volumeId = required(req.volumeId, 'volume_id');
    if (req.capacityRange === null) throw new CsiError(status.INVALID_ARGUMENT, 'capacity_range is required');
    const range = parseCapacityRange(req.capacityRange, 'capacity_range');
    if (range.requiredBytes === 0) throw new CsiError(status.INVALID_ARGUMENT, 'capacity_range.required_bytes is required');
    const cap = req.volumeCapability === null ? undefined : parseCapability(req.volumeCapability, 'volume_capability');
    const volume = await this.#locks.run([lockKey('volume-id', volumeId)], () => this.#expand(volumeId, range));
    // A block device is bigger as soon as the engine says so; a filesystem must be grown on the node.
    return { capacityBytes: toWireInt64(volume.capacityBytes), nodeExpansionRequired: cap?.accessType !== 'block' };
  }

  async #expand(volumeId: string, range: SizeRange): Promise<BackendVolume> {
    const volume = await this.#existingVolume(volumeId);
    const targetBytes = roundUpToBlock(range.requiredBytes);
    const sizeBytes = Math.max(volume.capacityBytes, targetBytes);
    if (range.limitBytes > 0 && sizeBytes > range.limitBytes) {
      throw new CsiError(status.OUT_OF_RANGE, `volume ${volumeId} cannot be ${sizeBytes} bytes within ${describe(range)}`);
    }
    // Already big enough is success: expansion is idempotent and never shrinks.
    if (sizeBytes === volume.capacityBytes) return volume;
    return this.#backend.expandVolume(volumeId, sizeBytes);
  }

  async getCapacity(req: GetCapacityRequest): Promise<GetCapacityResponse> {
    const caps = req.volumeCapabilities.map((cap, i) => parseCapability(cap, `volume_capabilities[${i}]`));
    parseVolumeParameters(req.parameters);
    // No volume with an unsupported capability can be created: there is no capacity for it.
    if (firstUnsupported(caps) !== undefined) return { availableCapacity: '0' };
    const capacity = await this.#backend.capacity(req.accessibleTopology);
    const response: GetCapacityResponse = { availableCapacity: toWireInt64(capacity.availableBytes) };
    if (capacity.maximumVolumeBytes !== undefined) response.maximumVolumeSize = { value: toWireInt64(capacity.maximumVolumeBytes) };
    return response;
  }

  async #existingVolume(volumeId: string): Promise<BackendVolume> {
    const volume = await this.#backend.getVolume(volumeId);
    if (volume === undefined) throw new CsiError(status.NOT_FOUND, `volume ${volumeId} not found`);
    return volume;
  }

  // ---- snapshots ----------------------------------------------------------------------------

  async createSnapshot(req: CreateSnapshotRequest): Promise<CreateSnapshotResponse> {
    const name = required(req.name, 'name');
    const sourceVolumeId = required(req.sourceVolumeId, 'source_volume_id');
    parseSnapshotParameters(req.parameters);
    const snapshotId = this.#backend.snapshotIdFor(name);
    const keys = [lockKey('snapshot-name', name), lockKey('snapshot-id', snapshotId)];
    const snapshot = await this.#locks.run(keys, async () => {
      const existing = await this.#backend.getSnapshot(snapshotId);
      if (existing === undefined) {
        await this.#existingVolume(sourceVolumeId);
        return this.#backend.createSnapshot(snapshotId, sourceVolumeId);
      }
      if (existing.sourceVolumeId !== sourceVolumeId) {
        throw new CsiError(status.ALREADY_EXISTS, `snapshot ${JSON.stringify(name)} already exists, of volume ${existing.sourceVolumeId}`);
      }
      return existing;
    });
    return { snapshot: toWireSnapshot(snapshot) };
  }

  async deleteSnapshot(req: DeleteSnapshotRequest): Promise<DeleteSnapshotResponse> {
    const snapshotId = required(req.snapshotId, 'snapshot_id');
    await this.#locks.run([lockKey('snapshot-id', snapshotId)], () => this.#backend.deleteSnapshot(snapshotId));
    return {};
  }

  async listSnapshots(req: ListSnapshotsRequest): Promise<ListSnapshotsResponse> {
    const snapshots = (await this.#backend.listSnapshots())
      .filter((s) => req.snapshotId === '' || s.snapshotId === req.snapshotId)
      .filter((s) => req.sourceVolumeId === '' || s.sourceVolumeId === req.sourceVolumeId)
      .sort(byKey((s) => s.snapshotId));
    const page = paginate(snapshots, (s) => s.snapshotId, req.maxEntries, req.startingToken);
    return { entries: page.entries.map((s) => ({ snapshot: toWireSnapshot(s) })), nextToken: page.nextToken };
  }
}

/** Everything about a CreateVolume request that can be checked without storage. */
function validateCreateVolume(req: CreateVolumeRequest): CreateSpec {
  const name = required(req.name, 'name');
  const caps = parseCapabilities(req.volumeCapabilities, 'volume_capabilities');
  const unsupported = firstUnsupported(caps);
  if (unsupported !== undefined) throw new CsiError(status.INVALID_ARGUMENT, unsupported);
  if (Object.keys(req.mutableParameters).length > 0) {
    throw new CsiError(status.INVALID_ARGUMENT, 'mutable_parameters are not supported (no MODIFY_VOLUME capability)');
  }
  return {
    name,
    range: parseCapacityRange(req.capacityRange, 'capacity_range'),
    params: parseVolumeParameters(req.parameters),
    source: contentSourceOf(req.volumeContentSource),
    requirement: req.accessibilityRequirements,
  };
}

function contentSourceOf(source: VolumeContentSource | null): ContentSource | undefined {
  if (source === null) return undefined;
  if (source.snapshot != null) return { kind: 'snapshot', id: required(source.snapshot.snapshotId, 'volume_content_source.snapshot.snapshot_id') };
  if (source.volume != null) return { kind: 'volume', id: required(source.volume.volumeId, 'volume_content_source.volume.volume_id') };
  throw new CsiError(status.INVALID_ARGUMENT, 'volume_content_source names neither a snapshot nor a volume');
}

/**
 * An existing volume answers a retried CreateVolume only if it is what the request asks for;
 * otherwise the name is taken by something else: ALREADY_EXISTS.
 */
function checkCompatible(existing: BackendVolume, spec: CreateSpec): void {
  const conflict = compatibilityProblem(existing, spec);
  if (conflict !== undefined) {
    throw new CsiError(status.ALREADY_EXISTS, `volume ${JSON.stringify(spec.name)} already exists (${existing.volumeId}) but ${conflict}`);
  }
}

function compatibilityProblem(existing: BackendVolume, spec: CreateSpec): string | undefined {
  if (!sizeSatisfies(existing.capacityBytes, spec.range)) return `its ${existing.capacityBytes} bytes do not fit ${describe(spec.range)}`;
  // An unknown source (undefined) cannot be checked; a retry must not fail because of it.
  if (existing.source !== undefined && !sameSource(existing.source, spec.source)) {
    return `it has another content source (${describeSource(existing.source)})`;
  }
  if (spec.source === undefined && existing.dedup !== undefined && existing.dedup !== spec.params.dedup) {
    return `it was created with dedup=${existing.dedup}`;
  }
  if (!existing.topology.some((t) => requirementAllows(spec.requirement, t))) return 'it is not accessible from the requested topology';
  return undefined;
}

function sameSource(a: ContentSource | null, b: ContentSource | undefined): boolean {
  return a?.kind === b?.kind && a?.id === b?.id;
}

function describeSource(source: ContentSource | null): string {
  return source === null ? 'none' : `${source.kind} ${source.id}`;
}

/** A REQUIRED string field: the spec's "missing required field" is INVALID_ARGUMENT. */
function required(value: string, field: string): string {
  if (value === '') throw new CsiError(status.INVALID_ARGUMENT, `${field} is required`);
  return value;
}
