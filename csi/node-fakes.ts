/**
 * For unit tests of the Node service: an in-memory machine (NodeSystem) with an in-memory
 * attacher. It models what node.ts relies on and nothing more: exports with sizes, devices with
 * content, a size and a read-only flag, a flat mount table (one mount per target), and the
 * attachers' contract (idempotent attach, DEVICE_BUSY on a used device, refresh of a device in
 * use only when the attacher resizes online).
 * The real machine is exercised by test/csi-node.test.ts.
 */
import { status } from '@grpc/grpc-js';
import type { AttachedDevice, AttachRequest, Attacher, DetachRequest, RefreshResult } from './attach/attacher.ts';
import { AttachError } from './attach/errors.ts';
import { MountError } from './mount/errors.ts';
import type { DeviceContent, FilesystemStats, FsType } from './mount/filesystem.ts';
import type { NodeSystem } from './node-system.ts';
import { CsiError } from './status.ts';

export interface FakeDevice {
  sizeBytes: number;
  content: DeviceContent;
  readOnly: boolean;
  /** The filesystem's size, as last created or grown. */
  fsBytes: number;
}

export interface FakeMount {
  /** A device path (filesystem mount, or a bound device node) or a directory (bind). */
  source: string;
  kind: 'filesystem' | 'bind';
  readOnly: boolean;
  fsType: FsType | null;
  options: readonly string[];
}

interface Attachment {
  devicePath: string;
  healthy: boolean;
}

export class FakeAttacher implements Attacher {
  readonly kind: 'fuse' | 'nbdfuse';
  /** As braid-fuse (true): refresh grows a device in use. As nbdfuse (false): only an unused one. */
  readonly onlineResize: boolean;
  readonly #machine: FakeMachine;
  readonly attached = new Map<string, Attachment>();
  /** When set, attach waits for it (to hold an operation in flight). */
  gate: Promise<void> | undefined;
  #nextDevice = 0;

  constructor(machine: FakeMachine, onlineResize: boolean) {
    this.#machine = machine;
    this.onlineResize = onlineResize;
    this.kind = onlineResize ? 'fuse' : 'nbdfuse';
  }

  async attach(req: AttachRequest): Promise<AttachedDevice> {
    await this.gate;
    const current = this.attached.get(req.exportName);
    if (current?.healthy === true) return { devicePath: current.devicePath };
    if (current !== undefined) await this.detach(req); // a dead attachment is torn down first
    const sizeBytes = this.#machine.exports.get(req.exportName);
    if (sizeBytes === undefined) throw new AttachError('ATTACH_FAILED', `no export ${req.exportName}`);
    const devicePath = `/dev/loop${this.#nextDevice++}`;
    const previous = this.#machine.contents.get(req.exportName) ?? { kind: 'empty' };
    this.#machine.devices.set(devicePath, { sizeBytes, content: previous, readOnly: false, fsBytes: this.#machine.fsBytes.get(req.exportName) ?? 0 });
    this.attached.set(req.exportName, { devicePath, healthy: true });
    return { devicePath };
  }

  async detach(req: DetachRequest): Promise<void> {
    const current = this.attached.get(req.exportName);
    if (current === undefined) return;
    const users = this.#machine.usersOf(current.devicePath);
    if (users.length > 0) throw new AttachError('DEVICE_BUSY', `${current.devicePath} is in use (${users.join(', ')})`);
    const device = this.#machine.devices.get(current.devicePath);
    // What was written stays in the export: the next attach sees it.
    if (device !== undefined) {
      this.#machine.contents.set(req.exportName, device.content);
      this.#machine.fsBytes.set(req.exportName, device.fsBytes);
    }
    this.#machine.devices.delete(current.devicePath);
    this.attached.delete(req.exportName);
  }

  async find(exportName: string): Promise<AttachedDevice | undefined> {
    const current = this.attached.get(exportName);
    return current?.healthy === true ? { devicePath: current.devicePath } : undefined;
  }

  async refresh(req: AttachRequest): Promise<RefreshResult> {
    const current = this.attached.get(req.exportName);
    if (current?.healthy !== true) throw new AttachError('NOT_ATTACHED', `${req.exportName} is not attached`);
    const device = this.#machine.devices.get(current.devicePath)!;
    const exportBytes = this.#machine.exports.get(req.exportName) ?? 0;
    if (device.sizeBytes >= exportBytes) return { devicePath: current.devicePath, sizeBytes: device.sizeBytes, reattached: false };
    const users = this.#machine.usersOf(current.devicePath);
    if (!this.onlineResize && users.length > 0) throw new AttachError('ONLINE_RESIZE_UNSUPPORTED', `${current.devicePath} is in use`);
    device.sizeBytes = exportBytes;
    this.#machine.log.push(`refresh ${current.devicePath}`);
    return { devicePath: current.devicePath, sizeBytes: exportBytes, reattached: !this.onlineResize };
  }

  /** Simulates a dead attachment (nbdfuse exited): find() stops seeing it. */
  kill(exportName: string): void {
    const current = this.attached.get(exportName);
    if (current !== undefined) current.healthy = false;
  }
}

/** The whole fake machine; `system` is what the NodeService gets. */
export class FakeMachine {
  /** Export name → size in bytes; absent: the engine does not serve it. */
  readonly exports = new Map<string, number>();
  /** What a detached export holds, carried to its next attach. */
  readonly contents = new Map<string, DeviceContent>();
  readonly fsBytes = new Map<string, number>();
  readonly devices = new Map<string, FakeDevice>();
  readonly mounts = new Map<string, FakeMount>();
  /** Paths created as publish targets (files or directories). */
  readonly paths = new Set<string>();
  readonly attacher: FakeAttacher;
  readonly log: string[] = [];
  engineDown = false;
  /** Whether the process holds CAP_SYS_RESOURCE; without it, growing a mounted ext4 fails (EPERM). */
  capSysResource = true;
  readonly system: NodeSystem;

  constructor(opts: { onlineResize?: boolean } = {}) {
    this.attacher = new FakeAttacher(this, opts.onlineResize ?? false);
    this.system = this.#buildSystem();
  }

  /** Mount points showing `devicePath`: its filesystem mounts, binds of its node, binds of those mounts. */
  usersOf(devicePath: string): string[] {
    const direct = [...this.mounts].filter(([, m]) => m.source === devicePath).map(([target]) => target);
    const indirect = [...this.mounts].filter(([, m]) => m.kind === 'bind' && direct.includes(m.source)).map(([target]) => target);
    return [...direct, ...indirect];
  }

  #buildSystem(): NodeSystem {
    return {
      attacher: this.attacher,
      exportSize: async (name) => {
        if (this.engineDown) throw new CsiError(status.FAILED_PRECONDITION, 'the engine is not running');
        return this.exports.get(name);
      },
      probeDevice: async (device) => this.#device(device).content,
      formatIfNeeded: async (device, fsType) => {
        const d = this.#device(device);
        if (d.content.kind === 'filesystem') {
          if (d.content.fsType === fsType) return { formatted: false };
          throw new MountError('FS_MISMATCH', `${device} holds ${d.content.fsType}, not ${fsType}`);
        }
        if (d.content.kind === 'other') throw new MountError('UNKNOWN_CONTENT', `${device} holds ${d.content.description}`);
        d.content = { kind: 'filesystem', fsType };
        d.fsBytes = d.sizeBytes;
        this.log.push(`mkfs.${fsType} ${device}`);
        return { formatted: true };
      },
      mount: async (device, target, fsType, options) => {
        const existing = this.mounts.get(target);
        const readOnly = options.includes('ro');
        if (existing !== undefined) {
          if (existing.source === device && existing.fsType === fsType && existing.readOnly === readOnly) return;
          throw new MountError('MOUNT_CONFLICT', `${target} already has ${existing.source}`);
        }
        this.mounts.set(target, { source: device, kind: 'filesystem', readOnly, fsType, options: [...options] });
        this.log.push(`mount ${device} ${target} ${fsType} ${options.join(',')}`);
      },
      bindMount: async (source, target, opts) => {
        if (!this.devices.has(source) && !this.mounts.has(source)) throw new MountError('INVALID_ARGUMENT', `bind source ${source} does not exist`);
        this.paths.add(target);
        // A bind of a read-only mount is read-only, as in the kernel.
        const readOnly = opts.readOnly || this.mounts.get(source)?.readOnly === true;
        const existing = this.mounts.get(target);
        if (existing !== undefined) {
          if (existing.source === source && existing.readOnly === opts.readOnly) return;
          throw new MountError('MOUNT_CONFLICT', `${target} already has ${existing.source}`);
        }
        this.mounts.set(target, { source, kind: 'bind', readOnly, fsType: null, options: [] });
        this.log.push(`bind ${source} ${target}${opts.readOnly ? ' ro' : ''}`);
      },
      unmount: async (target) => {
        if (this.mounts.delete(target)) this.log.push(`umount ${target}`);
      },
      isMountPoint: async (path) => this.mounts.has(path),
      removeTarget: async (path) => {
        this.paths.delete(path);
      },
      pathExists: async (path) => this.paths.has(path) || this.mounts.has(path),
      growFilesystem: async (mountPath, fsType) => {
        const m = this.mounts.get(mountPath);
        if (m === undefined) throw new MountError('NOT_MOUNTED', `nothing is mounted at ${mountPath}`);
        if (fsType === 'ext4' && !this.capSysResource) throw new MountError('MOUNT_FAILED', `resize2fs: Operation not permitted`);
        const d = this.#device(m.source);
        d.fsBytes = d.sizeBytes;
        this.log.push(`grow ${mountPath}`);
      },
      canGrowExt4Online: async () => this.capSysResource,
      filesystemStats: async (path): Promise<FilesystemStats> => {
        const m = this.mounts.get(path);
        const source = m?.kind === 'bind' ? this.mounts.get(m.source)?.source : m?.source;
        const total = source === undefined ? 0 : this.#device(source).fsBytes;
        return { totalBytes: total, availableBytes: total - 4096, usedBytes: 4096, totalInodes: 1000, freeInodes: 990, usedInodes: 10 };
      },
      deviceSizeBytes: async (device) => this.#device(device).sizeBytes,
      setDeviceReadOnly: async (device, readOnly) => {
        this.#device(device).readOnly = readOnly;
      },
      deviceMountPoints: async (device) => this.usersOf(device),
    };
  }

  #device(path: string): FakeDevice {
    const d = this.devices.get(path);
    if (d === undefined) throw new Error(`fake: no device ${path}`);
    return d;
  }
}
