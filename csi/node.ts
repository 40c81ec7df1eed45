/**
 * The CSI Node service: makes a Braid volume usable on this node, in two steps (the spec's
 * STAGE_UNSTAGE_VOLUME):
 *
 *   NodeStageVolume    attach the NBD export as a block device (csi/attach/); for a filesystem
 *                      volume, create the filesystem once and mount it at the staging path
 *   NodePublishVolume  bind the device node onto the target FILE (block), or the staging
 *                      directory onto the target DIRECTORY (mount), read-only when asked
 *   ...and back: NodeUnpublishVolume, NodeUnstageVolume (unmount, detach, forget).
 *
 * Every RPC is idempotent, host-path style: validate (no lock) -> lock the volume ID (ABORTED
 * while another operation on it runs) -> compare with what is recorded and live -> do what is
 * missing. What was staged is recorded per volume (node-state.ts) before anything is attached,
 * so a plugin restarted at any point finds, publishes and cleans up what an earlier process
 * staged; the attacher rebuilds its own view from its state and the live system.
 *
 * Expansion follows the attacher. With braid-fuse (`fuse`, onlineResize) it is ONLINE: the
 * attacher grows the device in place, mounted or open, and NodeExpandVolume then grows the
 * filesystem (xfs_growfs, resize2fs). With kernel NBD or nbdfuse it is OFFLINE: they read the
 * export size once, at connect, so a device sees a grown volume only after a re-attach, which
 * needs it unused (not mounted, not bound, not open). The Kubernetes offline flow does exactly
 * that: the volume is unstaged while the controller grows it, the next NodeStageVolume attaches
 * afresh, and NodeExpandVolume grows the filesystem. A NodeExpandVolume that would need a
 * re-attach of a device in use is FAILED_PRECONDITION (the spec's answer for "cannot expand while
 * published or staged"), and so is an ext4 that cannot grow mounted because the plugin lacks
 * CAP_SYS_RESOURCE.
 */
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import type { Logger } from '../engine/logger.ts';
import { lockKey, OperationLocks } from './locks.ts';
import type {
  NodeCapabilityName,
  NodeExpandVolumeRequest,
  NodeExpandVolumeResponse,
  NodeGetCapabilitiesResponse,
  NodeGetInfoResponse,
  NodeGetVolumeStatsRequest,
  NodeGetVolumeStatsResponse,
  NodePublishVolumeRequest,
  NodePublishVolumeResponse,
  NodeStageVolumeRequest,
  NodeStageVolumeResponse,
  NodeUnpublishVolumeRequest,
  NodeUnpublishVolumeResponse,
  NodeUnstageVolumeRequest,
  NodeUnstageVolumeResponse,
} from './node-messages.ts';
import { mapNodeErrors } from './node-errors.ts';
import { absolutePath, parseExpand, parsePublish, parseStage, required } from './node-requests.ts';
import type { ExpandSpec, PublishSpec, StageSpec } from './node-requests.ts';
import { blockReadOnly, checkPublishCompatible, checkStageCompatible, mountOptions, newRecord, publishReadOnly, withDevice, withoutTarget, withTarget } from './node-rules.ts';
import { NodeState } from './node-state.ts';
import type { StagedVolume } from './node-state.ts';
import { volumeStats } from './node-stats.ts';
import type { NodeSystem } from './node-system.ts';
import { toWireInt64 } from './proto.ts';
import type { CallContext } from './server.ts';
import { CsiError } from './status.ts';
import { nodeTopology } from './topology.ts';

export const NODE_CAPABILITIES: readonly NodeCapabilityName[] = ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION'];

/** Loop and nbd devices are plentiful; this is what the scheduler counts against. */
export const DEFAULT_MAX_VOLUMES_PER_NODE = 256;

/** Names inside the node state directory. */
export const NODE_VOLUMES_DIR = 'volumes';
export const NODE_ATTACH_DIR = 'attach';

export interface NodeServiceOptions {
  nodeId: string;
  /** The node state directory: stage records in STATE/volumes, attacher state in STATE/attach. */
  stateDir: string;
  system: NodeSystem;
  /** The NBD socket for volumes whose context names none (local mode: DIR/nbd.sock). */
  defaultNbdSocketPath?: string;
  maxVolumesPerNode?: number;
}

export class NodeService {
  readonly #nodeId: string;
  readonly #system: NodeSystem;
  readonly #state: NodeState;
  readonly #attachDir: string;
  readonly #defaultSocket: string | undefined;
  readonly #maxVolumes: number;
  // The node's own locks: a CO may run a controller and a node operation on one volume at once.
  readonly #locks = new OperationLocks();

  constructor(opts: NodeServiceOptions) {
    this.#nodeId = opts.nodeId;
    this.#system = opts.system;
    this.#state = new NodeState(join(opts.stateDir, NODE_VOLUMES_DIR));
    this.#attachDir = join(opts.stateDir, NODE_ATTACH_DIR);
    this.#defaultSocket = opts.defaultNbdSocketPath;
    this.#maxVolumes = opts.maxVolumesPerNode ?? DEFAULT_MAX_VOLUMES_PER_NODE;
  }

  /** Whether NodeExpandVolume grows volumes in use: what Identity advertises (ONLINE / OFFLINE). */
  get onlineExpansion(): boolean {
    return this.#system.attacher.onlineResize;
  }

  async nodeGetInfo(): Promise<NodeGetInfoResponse> {
    return { nodeId: this.#nodeId, maxVolumesPerNode: toWireInt64(this.#maxVolumes), accessibleTopology: nodeTopology(this.#nodeId) };
  }

  async nodeGetCapabilities(): Promise<NodeGetCapabilitiesResponse> {
    return { capabilities: NODE_CAPABILITIES.map((type) => ({ rpc: { type } })) };
  }

  // ---- stage / unstage ----------------------------------------------------------------------

  async nodeStageVolume(req: NodeStageVolumeRequest, context: CallContext): Promise<NodeStageVolumeResponse> {
    const spec = parseStage(req, this.#defaultSocket);
    await this.#locked(spec.volumeId, () => this.#stage(spec, context.logger));
    return {};
  }

  async #stage(spec: StageSpec, logger: Logger): Promise<void> {
    const existing = await this.#state.read(spec.volumeId);
    if (existing !== undefined) checkStageCompatible(existing, spec);
    else await this.#requireExport(spec);
    let record = existing ?? newRecord(spec);
    // The intent is recorded before anything is attached: an unstage after a crash finds it.
    if (existing === undefined) await this.#state.write(record);
    try {
      const { devicePath } = await this.#attach(record);
      record = await this.#saveDevice(record, devicePath);
      if (record.accessType === 'mount') await this.#mountStaging(record, devicePath, logger);
      else await this.#system.setDeviceReadOnly(devicePath, blockReadOnly(record));
    } catch (err) {
      // A first stage that failed leaves nothing behind; a retried one keeps what it had.
      if (existing === undefined) await this.#undoStage(record, logger);
      throw err;
    }
  }

  async #mountStaging(record: StagedVolume, devicePath: string, logger: Logger): Promise<void> {
    const fsType = record.fsType ?? 'ext4';
    if (record.readOnly) {
      // Never write to a volume staged read-only, not even to create its filesystem.
      const content = await this.#system.probeDevice(devicePath);
      if (content.kind !== 'filesystem' || content.fsType !== fsType) {
        throw new CsiError(status.FAILED_PRECONDITION, `volume ${record.volumeId} is staged read-only but holds no ${fsType} filesystem`);
      }
    } else {
      const { formatted } = await this.#system.formatIfNeeded(devicePath, fsType);
      if (formatted) logger.info({ volumeId: record.volumeId, devicePath, fsType }, 'created a filesystem on a new volume');
    }
    await this.#system.mount(devicePath, record.stagingPath, fsType, mountOptions(record));
  }

  async #undoStage(record: StagedVolume, logger: Logger): Promise<void> {
    try {
      await this.#system.attacher.detach({ exportName: record.exportName, stateDir: this.#attachDir });
      await this.#state.remove(record.volumeId);
    } catch (err) {
      logger.warn({ err, volumeId: record.volumeId }, 'could not undo a failed stage; NodeUnstageVolume will clean up');
    }
  }

  async nodeUnstageVolume(req: NodeUnstageVolumeRequest, context: CallContext): Promise<NodeUnstageVolumeResponse> {
    const volumeId = required(req.volumeId, 'volume_id');
    const stagingPath = absolutePath(req.stagingTargetPath, 'staging_target_path');
    await this.#locked(volumeId, () => this.#unstage(volumeId, stagingPath, context.logger));
    return {};
  }

  async #unstage(volumeId: string, stagingPath: string, logger: Logger): Promise<void> {
    const record = await this.#state.read(volumeId);
    if (record === undefined) return; // never staged here, or already unstaged
    if (record.stagingPath !== stagingPath) {
      // host-path's answer: not staged at this path is nothing to do.
      logger.warn({ volumeId, stagingPath, stagedAt: record.stagingPath }, 'unstage of a path the volume is not staged at: nothing to do');
      return;
    }
    // The CO unpublishes first; if it did not, refusing is the only safe answer.
    const users = await this.#publishedAt(record);
    if (users.length > 0) {
      throw new CsiError(status.FAILED_PRECONDITION, `volume ${volumeId} is still published at ${users.join(', ')}: unpublish it first`);
    }
    if (record.accessType === 'mount') await this.#system.unmount(record.stagingPath);
    await this.#system.attacher.detach({ exportName: record.exportName, stateDir: this.#attachDir });
    await this.#state.remove(volumeId);
  }

  /** Mount points other than the staging path that show the volume's device or its filesystem. */
  async #publishedAt(record: StagedVolume): Promise<string[]> {
    const found = new Set<string>();
    for (const t of record.published) if (await this.#system.isMountPoint(t.targetPath)) found.add(t.targetPath);
    const live = await this.#system.attacher.find(record.exportName, this.#attachDir);
    if (live !== undefined) {
      for (const point of await this.#system.deviceMountPoints(live.devicePath)) if (point !== record.stagingPath) found.add(point);
    }
    return [...found];
  }

  // ---- publish / unpublish ------------------------------------------------------------------

  async nodePublishVolume(req: NodePublishVolumeRequest): Promise<NodePublishVolumeResponse> {
    const spec = parsePublish(req, this.#defaultSocket);
    await this.#locked(spec.volumeId, () => this.#publish(spec));
    return {};
  }

  async #publish(spec: PublishSpec): Promise<void> {
    const record = await this.#stagedRecord(spec);
    checkPublishCompatible(record, spec);
    const readOnly = publishReadOnly(record, spec.readOnly);
    if (record.accessType === 'mount') {
      if (!(await this.#system.isMountPoint(record.stagingPath))) {
        throw new CsiError(status.FAILED_PRECONDITION, `volume ${spec.volumeId} is not staged: nothing is mounted at ${record.stagingPath}`);
      }
      await this.#system.bindMount(record.stagingPath, spec.targetPath, { readOnly });
      await this.#state.write(withTarget(record, spec.targetPath, readOnly));
      return;
    }
    // Block: attach is idempotent, and re-attaches an export whose connection died.
    const { devicePath } = await this.#attach(record);
    const before = await this.#saveDevice(record, devicePath);
    const after = withTarget(before, spec.targetPath, readOnly);
    // Read-only goes on before the device is reachable through the target, so no writer can
    // open it in between.
    await this.#system.setDeviceReadOnly(devicePath, blockReadOnly(after));
    try {
      await this.#system.bindMount(devicePath, spec.targetPath, { readOnly });
    } catch (err) {
      await this.#system.setDeviceReadOnly(devicePath, blockReadOnly(before)).catch(() => undefined);
      throw err;
    }
    await this.#state.write(after);
  }

  /** The record of a staged volume; FAILED_PRECONDITION when not staged, NOT_FOUND when it does not exist. */
  async #stagedRecord(spec: PublishSpec): Promise<StagedVolume> {
    const record = await this.#state.read(spec.volumeId);
    if (record === undefined || record.devicePath === null) {
      await this.#requireExport(spec);
      throw new CsiError(status.FAILED_PRECONDITION, `volume ${spec.volumeId} is not staged on this node: NodeStageVolume first`);
    }
    if (record.stagingPath !== spec.stagingPath) {
      throw new CsiError(status.FAILED_PRECONDITION, `volume ${spec.volumeId} is staged at ${record.stagingPath}, not at ${spec.stagingPath}`);
    }
    return record;
  }

  async nodeUnpublishVolume(req: NodeUnpublishVolumeRequest): Promise<NodeUnpublishVolumeResponse> {
    const volumeId = required(req.volumeId, 'volume_id');
    const targetPath = absolutePath(req.targetPath, 'target_path');
    await this.#locked(volumeId, () => this.#unpublish(volumeId, targetPath));
    return {};
  }

  async #unpublish(volumeId: string, targetPath: string): Promise<void> {
    await this.#system.unmount(targetPath);
    try {
      await this.#system.removeTarget(targetPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw err;
      throw new CsiError(status.FAILED_PRECONDITION, `${targetPath} is not mounted but holds files: not removing it`, { cause: err });
    }
    const record = await this.#state.read(volumeId);
    if (record === undefined || !record.published.some((t) => t.targetPath === targetPath)) return;
    const after = withoutTarget(record, targetPath);
    await this.#state.write(after);
    if (after.accessType === 'block') {
      const live = await this.#system.attacher.find(after.exportName, this.#attachDir);
      if (live !== undefined) await this.#system.setDeviceReadOnly(live.devicePath, blockReadOnly(after));
    }
  }

  // ---- stats and expansion ------------------------------------------------------------------

  async nodeGetVolumeStats(req: NodeGetVolumeStatsRequest): Promise<NodeGetVolumeStatsResponse> {
    const volumeId = required(req.volumeId, 'volume_id');
    const volumePath = absolutePath(req.volumePath, 'volume_path');
    // No lock: kubelet polls this, and it changes nothing.
    return mapNodeErrors(async () => {
      const record = await this.#recordAt(volumeId, volumePath);
      return volumeStats(this.#system, record, volumePath, this.#attachDir);
    });
  }

  async nodeExpandVolume(req: NodeExpandVolumeRequest, context: CallContext): Promise<NodeExpandVolumeResponse> {
    const spec = parseExpand(req);
    const sizeBytes = await this.#locked(spec.volumeId, () => this.#expand(spec, context.logger));
    return { capacityBytes: toWireInt64(sizeBytes) };
  }

  async #expand(spec: ExpandSpec, logger: Logger): Promise<number> {
    const record = await this.#recordAt(spec.volumeId, spec.volumePath);
    if (spec.capability !== undefined && spec.capability.accessType !== record.accessType) {
      throw new CsiError(status.INVALID_ARGUMENT, `volume ${spec.volumeId} is staged as ${record.accessType}, not ${spec.capability.accessType}`);
    }
    const live = await this.#system.attacher.find(record.exportName, this.#attachDir);
    if (live === undefined) throw new CsiError(status.FAILED_PRECONDITION, `volume ${spec.volumeId} has no healthy device: stage it again`);
    let devicePath = live.devicePath;
    const exportBytes = await this.#system.exportSize(record.exportName, record.socketPath);
    if (exportBytes === undefined) throw new CsiError(status.NOT_FOUND, `volume ${spec.volumeId} no longer exists`);
    if (spec.range.requiredBytes > exportBytes) {
      throw new CsiError(status.OUT_OF_RANGE, `volume ${spec.volumeId} is ${exportBytes} bytes, less than the ${spec.range.requiredBytes} asked: ControllerExpandVolume first`);
    }
    if ((await this.#system.deviceSizeBytes(devicePath)) < exportBytes) {
      if (this.#system.attacher.onlineResize) {
        devicePath = await this.#growOnline(record);
        logger.info({ volumeId: spec.volumeId, devicePath, exportBytes }, 'grew the device online');
      } else {
        devicePath = await this.#reattachToGrow(record, devicePath, exportBytes);
        logger.info({ volumeId: spec.volumeId, devicePath, exportBytes }, 're-attached the volume to see its new size');
      }
    }
    if (record.accessType === 'mount') await this.#growFilesystem(record, devicePath);
    return this.#system.deviceSizeBytes(devicePath);
  }

  /** The attacher grows the device in place, in use or not. */
  async #growOnline(record: StagedVolume): Promise<string> {
    const refreshed = await this.#system.attacher.refresh({ exportName: record.exportName, socketPath: record.socketPath, stateDir: this.#attachDir });
    await this.#saveDevice(record, refreshed.devicePath);
    return refreshed.devicePath;
  }

  /** Grows the mounted filesystem to the device; an ext4 the process may not grow mounted is FAILED_PRECONDITION, not a crash. */
  async #growFilesystem(record: StagedVolume, devicePath: string): Promise<void> {
    const fsType = record.fsType ?? 'ext4';
    try {
      await this.#system.growFilesystem(record.stagingPath, fsType);
    } catch (err) {
      if (fsType !== 'ext4' || (await this.#system.canGrowExt4Online())) throw err;
      throw new CsiError(
        status.FAILED_PRECONDITION,
        `volume ${record.volumeId}: ${devicePath} has grown, but its ext4 filesystem cannot grow while mounted: resize2fs needs ` +
          'CAP_SYS_RESOURCE, which the node plugin does not have (grant it to the plugin, or use xfs)',
        { cause: err },
      );
    }
  }

  /** Re-attaches an unused device so that it sees the grown export; FAILED_PRECONDITION when in use. */
  async #reattachToGrow(record: StagedVolume, devicePath: string, exportBytes: number): Promise<string> {
    const users = [...new Set([...(await this.#publishedAt(record)), ...(await this.#system.deviceMountPoints(devicePath))])];
    if (users.length > 0) {
      throw new CsiError(
        status.FAILED_PRECONDITION,
        `volume ${record.volumeId} grew to ${exportBytes} bytes, but ${devicePath} reads the size only when attached and is in use ` +
          `(${users.join(', ')}): Braid expands offline, so unpublish and unstage the volume, then stage it again`,
      );
    }
    const refreshed = await this.#system.attacher.refresh({ exportName: record.exportName, socketPath: record.socketPath, stateDir: this.#attachDir });
    await this.#saveDevice(record, refreshed.devicePath);
    return refreshed.devicePath;
  }

  // ---- shared -------------------------------------------------------------------------------

  /** The record of a volume whose staging or publish path is `path`; NOT_FOUND otherwise. */
  async #recordAt(volumeId: string, path: string): Promise<StagedVolume> {
    const record = await this.#state.read(volumeId);
    if (record === undefined) throw new CsiError(status.NOT_FOUND, `volume ${volumeId} is not staged on this node`);
    const known = record.stagingPath === path || record.published.some((t) => t.targetPath === path);
    if (!known || !(await this.#system.pathExists(path))) {
      throw new CsiError(status.NOT_FOUND, `${path} is not a path of volume ${volumeId} on this node`);
    }
    return record;
  }

  async #requireExport(spec: { volumeId: string; exportName: string; socketPath: string }): Promise<void> {
    if ((await this.#system.exportSize(spec.exportName, spec.socketPath)) === undefined) {
      throw new CsiError(status.NOT_FOUND, `volume ${spec.volumeId} does not exist (the engine at ${spec.socketPath} has no export ${spec.exportName})`);
    }
  }

  #attach(record: StagedVolume): Promise<{ devicePath: string }> {
    return this.#system.attacher.attach({ exportName: record.exportName, socketPath: record.socketPath, stateDir: this.#attachDir });
  }

  async #saveDevice(record: StagedVolume, devicePath: string): Promise<StagedVolume> {
    if (record.devicePath === devicePath) return record;
    const updated = withDevice(record, devicePath);
    await this.#state.write(updated);
    return updated;
  }

  #locked<T>(volumeId: string, operation: () => Promise<T>): Promise<T> {
    return this.#locks.run([lockKey('volume-id', volumeId)], () => mapNodeErrors(operation));
  }
}
