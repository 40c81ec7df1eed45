/**
 * Everything the Node service does to the machine, behind one interface: the attacher, the
 * filesystem and mount helpers (csi/mount/), and a few device questions. node.ts holds the CSI
 * rules (validation, idempotency, state, status codes) and nothing else, so its unit tests run
 * against an in-memory NodeSystem (node-fakes.ts) while test/csi-node.test.ts runs the real one.
 */
import { lstat, rm, rmdir, stat } from 'node:fs/promises';
import type { Attacher } from './attach/attacher.ts';
import { execTool } from './attach/exec.ts';
import type { Exec } from './attach/exec.ts';
import { deviceSizeBytes, filesystemStats, formatIfNeeded, growFilesystem, probeDevice } from './mount/filesystem.ts';
import type { DeviceContent, FilesystemStats, FsType } from './mount/filesystem.ts';
import { bindMount, isMountPoint, majorMinorOf, mount, unmount } from './mount/mount.ts';
import { readMountTable } from './mount/mountinfo.ts';
import { CAP_SYS_RESOURCE, hasCapability } from './node-capabilities.ts';
import { exportSize } from './node-export.ts';

export interface NodeSystem {
  readonly attacher: Attacher;
  /** The export's size, or undefined when the engine does not serve it (CsiError when it is down). */
  exportSize(exportName: string, socketPath: string): Promise<number | undefined>;
  probeDevice(device: string): Promise<DeviceContent>;
  formatIfNeeded(device: string, fsType: FsType): Promise<{ formatted: boolean }>;
  mount(device: string, target: string, fsType: FsType, options: readonly string[]): Promise<void>;
  bindMount(source: string, target: string, opts: { readOnly: boolean }): Promise<void>;
  unmount(target: string): Promise<void>;
  isMountPoint(path: string): Promise<boolean>;
  /** Removes a publish target (a file, or an EMPTY directory); a missing one is fine. */
  removeTarget(path: string): Promise<void>;
  pathExists(path: string): Promise<boolean>;
  growFilesystem(mountPath: string, fsType: FsType): Promise<void>;
  /** Whether this process may grow a mounted ext4 (resize2fs needs CAP_SYS_RESOURCE for that). */
  canGrowExt4Online(): Promise<boolean>;
  filesystemStats(path: string): Promise<FilesystemStats>;
  deviceSizeBytes(device: string): Promise<number>;
  setDeviceReadOnly(device: string, readOnly: boolean): Promise<void>;
  /**
   * Every mount point where the device is visible: filesystems mounted from it (and bind mounts
   * of those, which carry the same device number) and bind mounts of its device node (block
   * publishes). The attachers' own in-use check does not see the latter: a bind-mounted device
   * node is a mount of devtmpfs, not of the device.
   */
  deviceMountPoints(device: string): Promise<string[]>;
}

/** The real machine. */
export function systemNodeSystem(attacher: Attacher, exec: Exec = execTool): NodeSystem {
  return {
    attacher,
    exportSize: (name, socket) => exportSize(name, socket, exec),
    probeDevice: (device) => probeDevice(device, exec),
    formatIfNeeded: (device, fsType) => formatIfNeeded(device, fsType, exec),
    mount: (device, target, fsType, options) => mount(device, target, fsType, options, exec),
    bindMount: (source, target, opts) => bindMount(source, target, opts, exec),
    unmount: (target) => unmount(target, exec),
    isMountPoint,
    removeTarget,
    pathExists,
    growFilesystem: (mountPath, fsType) => growFilesystem(mountPath, fsType, exec),
    canGrowExt4Online: () => hasCapability(CAP_SYS_RESOURCE),
    filesystemStats,
    deviceSizeBytes: (device) => deviceSizeBytes(device, exec),
    setDeviceReadOnly: async (device, readOnly) => {
      // BLKROSET: new opens for writing fail with EACCES. A writer that opened the device
      // before keeps writing (the kernel only warns), so this is set before anyone opens it.
      await exec('blockdev', [readOnly ? '--setro' : '--setrw', device]);
    },
    deviceMountPoints,
  };
}

async function removeTarget(path: string): Promise<void> {
  let isDirectory: boolean;
  try {
    isDirectory = (await lstat(path)).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  // Never recursive: an unmounted target that still holds files holds someone's data.
  if (isDirectory) await rmdir(path);
  else await rm(path);
}

async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Filesystems that hold device nodes: a bind mount of one of their files may be our device. */
const DEVICE_NODE_FILESYSTEMS: ReadonlySet<string> = new Set(['devtmpfs', 'tmpfs']);

async function deviceMountPoints(device: string): Promise<string[]> {
  const rdev = (await stat(device)).rdev;
  const majorMinor = majorMinorOf(rdev);
  const points: string[] = [];
  for (const entry of await readMountTable()) {
    if (entry.majorMinor === majorMinor) {
      points.push(entry.mountPoint);
    } else if (DEVICE_NODE_FILESYSTEMS.has(entry.fsType) && entry.root !== '/') {
      // A bind mount of a single file out of /dev: stat tells whether it is our node.
      const s = await stat(entry.mountPoint).catch(() => undefined);
      if (s?.isBlockDevice() === true && s.rdev === rdev) points.push(entry.mountPoint);
    }
  }
  return points;
}
