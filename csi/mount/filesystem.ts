/**
 * Filesystems on attached devices: detect, create once, grow online, and measure.
 *
 * The one rule: a device that holds anything blkid recognises is never formatted. mke2fs does
 * not protect us here: without a terminal it overwrites an existing filesystem silently, so
 * the blkid probe (low-level, bypassing blkid's cache) is the only guard and runs every time.
 */
import { statfs } from 'node:fs/promises';
import { execTool, exitedWith } from '../attach/exec.ts';
import type { Exec } from '../attach/exec.ts';
import { MountError } from './errors.ts';
import { readMountTable, mountsAt } from './mountinfo.ts';

export type FsType = 'ext4' | 'xfs';

export const FS_TYPES: readonly FsType[] = ['ext4', 'xfs'];

export function isFsType(value: string): value is FsType {
  return (FS_TYPES as readonly string[]).includes(value);
}

/** What blkid found on a device: nothing, a filesystem, or something else (partition table, RAID...). */
export type DeviceContent = { kind: 'empty' } | { kind: 'filesystem'; fsType: string } | { kind: 'other'; description: string };

/** blkid(8) exit statuses. */
const BLKID_NOTHING_FOUND = 2;
const BLKID_AMBIVALENT = 8;

export function blkidArgs(device: string): string[] {
  // -p: probe the device itself, not blkid's cache, which can be stale for a device we just
  // attached. -o export: KEY=value lines.
  return ['-p', '-o', 'export', device];
}

export async function probeDevice(device: string, exec: Exec = execTool): Promise<DeviceContent> {
  let stdout: string;
  try {
    ({ stdout } = await exec('blkid', blkidArgs(device)));
  } catch (err) {
    if (exitedWith(err, BLKID_NOTHING_FOUND)) return { kind: 'empty' };
    if (exitedWith(err, BLKID_AMBIVALENT)) return { kind: 'other', description: 'several signatures (ambivalent probe)' };
    throw new MountError('MOUNT_FAILED', `cannot probe ${device}`, { cause: err });
  }
  return parseBlkidExport(stdout);
}

export function parseBlkidExport(stdout: string): DeviceContent {
  const values = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) values.set(line.slice(0, eq), line.slice(eq + 1));
  }
  const type = values.get('TYPE');
  if (type !== undefined && values.get('USAGE') === 'filesystem') return { kind: 'filesystem', fsType: type };
  const what = type ?? (values.has('PTTYPE') ? `a ${values.get('PTTYPE')} partition table` : 'an unknown signature');
  return { kind: 'other', description: what };
}

export function mkfsCommand(device: string, fsType: FsType): { file: string; args: string[] } {
  // No discard at mkfs: the device has no filesystem yet, which for a thin volume almost always
  // means nothing is allocated, and a whole-device discard through loop and FUSE is slow.
  switch (fsType) {
    case 'ext4':
      return { file: 'mkfs.ext4', args: ['-q', '-E', 'nodiscard', device] };
    case 'xfs':
      // Without -f, mkfs.xfs itself refuses to overwrite a signature: a second guard.
      return { file: 'mkfs.xfs', args: ['-q', '-K', device] };
    default: {
      const unreachable: never = fsType;
      return unreachable;
    }
  }
}

/**
 * Creates an `fsType` filesystem on `device` unless it already has one. Returns whether it
 * formatted. A device with another filesystem is FS_MISMATCH, and one with anything else
 * (partition table, ambivalent signatures) is UNKNOWN_CONTENT: both are left untouched.
 */
export async function formatIfNeeded(device: string, fsType: FsType, exec: Exec = execTool): Promise<{ formatted: boolean }> {
  const content = await probeDevice(device, exec);
  switch (content.kind) {
    case 'filesystem':
      if (content.fsType === fsType) return { formatted: false };
      throw new MountError('FS_MISMATCH', `${device} holds a ${content.fsType} filesystem, not ${fsType}: refusing to reformat it`);
    case 'other':
      throw new MountError('UNKNOWN_CONTENT', `${device} holds ${content.description}: refusing to format it`);
    case 'empty':
      break;
    default: {
      const unreachable: never = content;
      return unreachable;
    }
  }
  const { file, args } = mkfsCommand(device, fsType);
  try {
    await exec(file, args);
  } catch (err) {
    throw new MountError('MOUNT_FAILED', `cannot create ${fsType} on ${device}`, { cause: err });
  }
  return { formatted: true };
}

export function growCommand(fsType: FsType, device: string, mountPath: string): { file: string; args: string[] } {
  switch (fsType) {
    case 'ext4':
      // resize2fs grows a mounted ext4 online; it takes the device, not the mount point.
      return { file: 'resize2fs', args: [device] };
    case 'xfs':
      // xfs_growfs takes the mount point; with no size option it grows the data section to the device size.
      return { file: 'xfs_growfs', args: [mountPath] };
    default: {
      const unreachable: never = fsType;
      return unreachable;
    }
  }
}

/**
 * Grows the filesystem mounted at `mountPath` (an absolute, symlink-free path) to fill its
 * device, online. The device must already show the new size. A no-op when there is no room.
 */
export async function growFilesystem(mountPath: string, fsType: FsType, exec: Exec = execTool): Promise<void> {
  const mounts = mountsAt(await readMountTable(), mountPath);
  const top = mounts[mounts.length - 1];
  if (!top) throw new MountError('NOT_MOUNTED', `nothing is mounted at ${mountPath}`);
  if (top.fsType !== fsType) throw new MountError('FS_MISMATCH', `${mountPath} is ${top.fsType}, not ${fsType}`);
  const { file, args } = growCommand(fsType, top.source, mountPath);
  try {
    await exec(file, args);
  } catch (err) {
    throw new MountError('MOUNT_FAILED', `cannot grow the ${fsType} filesystem at ${mountPath}`, { cause: err });
  }
}

export interface FilesystemStats {
  totalBytes: number;
  availableBytes: number;
  usedBytes: number;
  totalInodes: number;
  freeInodes: number;
  usedInodes: number;
}

/** Space and inodes of the filesystem holding `path` (statfs(2)), as NodeGetVolumeStats reports them. */
export async function filesystemStats(path: string): Promise<FilesystemStats> {
  const s = await statfs(path);
  return {
    totalBytes: s.blocks * s.bsize,
    // bavail, not bfree: what an unprivileged writer (the pod) can still use.
    availableBytes: s.bavail * s.bsize,
    usedBytes: (s.blocks - s.bfree) * s.bsize,
    totalInodes: s.files,
    freeInodes: s.ffree,
    usedInodes: s.files - s.ffree,
  };
}

/** The size of a block device in bytes (blockdev --getsize64). */
export async function deviceSizeBytes(device: string, exec: Exec = execTool): Promise<number> {
  const { stdout } = await exec('blockdev', ['--getsize64', device]);
  const text = stdout.trim();
  const sizeBytes = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(sizeBytes)) {
    throw new MountError('MOUNT_FAILED', `blockdev --getsize64 ${device} printed ${JSON.stringify(text)}`);
  }
  return sizeBytes;
}
