/**
 * Mounting, bind-mounting and unmounting, all idempotent in the CSI way: doing again what is
 * already done succeeds; finding something else at the target is MOUNT_CONFLICT, never
 * silently stacked over. "Already done" is decided from the mount table and stat(2) (the
 * device number a mount or a device node carries), not from command output.
 *
 * Paths must be absolute. Targets are compared after realpath, because the kernel's mount
 * table holds canonical paths.
 */
import { mkdir, open, realpath, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { dirname, isAbsolute } from 'node:path';
import { execTool } from '../attach/exec.ts';
import type { Exec } from '../attach/exec.ts';
import { MountError } from './errors.ts';
import type { FsType } from './filesystem.ts';
import { mountsAt, readMountTable } from './mountinfo.ts';
import type { MountEntry } from './mountinfo.ts';

/** More mounts stacked on one target than this means a loop somewhere: stop and report. */
const MAX_STACKED_MOUNTS = 16;

export function mountArgs(device: string, target: string, fsType: FsType, options: readonly string[]): string[] {
  const args = ['-t', fsType];
  if (options.length > 0) args.push('-o', options.join(','));
  args.push(device, target);
  return args;
}

/** Mounts the filesystem on `device` at directory `target` (created if missing). */
export async function mount(device: string, target: string, fsType: FsType, options: readonly string[] = [], exec: Exec = execTool): Promise<void> {
  requireAbsolute(device, target);
  await mkdir(target, { recursive: true });
  const top = await topMount(target);
  if (top) {
    const deviceStat = await stat(device);
    const sameReadOnly = hasReadOnly(top) === options.includes('ro');
    if (top.majorMinor === majorMinorOf(deviceStat.rdev) && top.fsType === fsType && sameReadOnly) return;
    throw new MountError('MOUNT_CONFLICT', `${target} already has ${top.source} (${top.fsType}, ${top.mountOptions}) mounted`);
  }
  await run(exec, mountArgs(device, target, fsType, options), `cannot mount ${device} on ${target}`);
}

/**
 * Bind-mounts `source` onto `target`. Block mode binds a device node onto a target FILE (so
 * the pod sees a block device there); filesystem mode binds a directory onto a directory.
 * The target is created (file or directory, matching the source) when missing.
 *
 * `readOnly` makes the bind mount read-only, which protects a directory but NOT a device node:
 * the kernel's read-only mount check covers regular files and directories only, so a device
 * opened through a read-only bind is still writable (verified on Linux 6.18). A read-only block
 * volume needs a read-only device as well.
 */
export async function bindMount(source: string, target: string, opts: { readOnly: boolean }, exec: Exec = execTool): Promise<void> {
  requireAbsolute(source, target);
  const sourceStat = await statOrUndefined(source);
  if (!sourceStat) throw new MountError('INVALID_ARGUMENT', `bind source ${source} does not exist`);
  await createTarget(target, sourceStat.isDirectory());
  const top = await topMount(target);
  if (top) {
    if ((await sameObject(sourceStat, target)) && hasReadOnly(top) === opts.readOnly) return;
    throw new MountError('MOUNT_CONFLICT', `${target} already has ${top.source}${top.root} (${top.mountOptions}) mounted`);
  }
  await run(exec, ['--bind', source, target], `cannot bind ${source} onto ${target}`);
  if (!opts.readOnly) return;
  // A bind mount takes its flags from the source mount; read-only needs a second, remount step.
  try {
    await run(exec, ['-o', 'remount,bind,ro', target], `cannot make the bind mount at ${target} read-only`);
  } catch (err) {
    await unmount(target, exec);
    throw err;
  }
}

/** Unmounts everything mounted at `target`; a path that is not a mount point (or missing) is fine. */
export async function unmount(target: string, exec: Exec = execTool): Promise<void> {
  requireAbsolute(target);
  for (let i = 0; i < MAX_STACKED_MOUNTS; i++) {
    if (!(await isMountPoint(target))) return;
    try {
      await exec('umount', [target]);
    } catch (err) {
      // umount(8) uses exit 32 both for "busy" and "not mounted", so ask the mount table.
      if (await isMountPoint(target)) throw new MountError('MOUNT_FAILED', `cannot unmount ${target}`, { cause: err });
    }
  }
  throw new MountError('MOUNT_FAILED', `${target} still has mounts after ${MAX_STACKED_MOUNTS} unmounts`);
}

export async function isMountPoint(target: string): Promise<boolean> {
  return (await topMount(target)) !== undefined;
}

/** The topmost mount at `target` (the one a path lookup sees), or undefined. */
async function topMount(target: string): Promise<MountEntry | undefined> {
  let canonical: string;
  try {
    canonical = await realpath(target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const mounts = mountsAt(await readMountTable(), canonical);
  return mounts[mounts.length - 1];
}

/** Whether `target` now shows the object `source` is: the same device node, or the same directory. */
async function sameObject(source: Stats, target: string): Promise<boolean> {
  const t = await stat(target);
  if (source.isBlockDevice()) return t.isBlockDevice() && t.rdev === source.rdev;
  return t.dev === source.dev && t.ino === source.ino;
}

async function createTarget(target: string, directory: boolean): Promise<void> {
  if (directory) {
    await mkdir(target, { recursive: true });
    return;
  }
  await mkdir(dirname(target), { recursive: true });
  // 'a': creates an empty file, and never truncates one that exists (it may be a bound device).
  const file = await open(target, 'a', 0o600);
  await file.close();
}

/**
 * The "major:minor" of a device number as stat(2) gives it (glibc's dev_t layout: gnu_dev_major
 * and gnu_dev_minor), which is how the mount table writes it.
 */
export function majorMinorOf(rdev: number): string {
  const d = BigInt(rdev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

function hasReadOnly(entry: MountEntry): boolean {
  return entry.mountOptions.split(',').includes('ro');
}

async function statOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function run(exec: Exec, args: string[], failure: string): Promise<void> {
  try {
    await exec('mount', args);
  } catch (err) {
    throw new MountError('MOUNT_FAILED', failure, { cause: err });
  }
}

function requireAbsolute(...paths: string[]): void {
  for (const p of paths) {
    if (!isAbsolute(p)) throw new MountError('INVALID_ARGUMENT', `${JSON.stringify(p)} is not an absolute path`);
  }
}
