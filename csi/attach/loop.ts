/**
 * Loop devices through losetup(8), and their live state through sysfs.
 *
 * Buffered I/O (--direct-io=off): the backing file is a FUSE file served by nbdfuse, and
 * buffered loop I/O is the mode loop has always supported on any filesystem.
 */
import { access } from 'node:fs/promises';
import { basename } from 'node:path';
import { AttachError } from './errors.ts';
import type { Exec } from './exec.ts';
import { sleep } from './proc.ts';

/** LOOP_CLR_FD completes at once on an unused device; this bounds the wait for sysfs to agree. */
const DETACH_SETTLE_MS = 2_000;
const POLL_INTERVAL_MS = 50;

export interface LoopDevice {
  name: string;
  backingFile: string;
}

/** `losetup --find --show` on `file`, or on `preferred` (e.g. the device it had before a refresh). */
export function loopAttachArgs(file: string, preferred?: string): string[] {
  // --nooverlap: if a loop device already maps this file, losetup returns it instead of
  // creating a second one, so a retried attach cannot leave two devices on one export.
  const args = ['--show', '--direct-io=off', '--nooverlap'];
  if (preferred === undefined) args.push('--find');
  else args.push(preferred);
  args.push(file);
  return args;
}

export function loopDetachArgs(device: string): string[] {
  return ['--detach', device];
}

export const LOOP_LIST_ARGS: readonly string[] = ['--json', '--list', '--output', 'NAME,BACK-FILE'];

/** Parses `losetup --json --list`: {"loopdevices": [{"name": ..., "back-file": ...}]}. */
export function parseLoopList(stdout: string): LoopDevice[] {
  if (stdout.trim() === '') return [];
  const parsed = JSON.parse(stdout) as { loopdevices?: { name?: unknown; 'back-file'?: unknown }[] };
  const devices: LoopDevice[] = [];
  for (const d of parsed.loopdevices ?? []) {
    if (typeof d.name === 'string' && typeof d['back-file'] === 'string') {
      devices.push({ name: d.name, backingFile: stripDeleted(d['back-file']) });
    }
  }
  return devices;
}

/** The kernel appends " (deleted)" to a backing file that was unlinked; it is still that file. */
function stripDeleted(path: string): string {
  return path.endsWith(' (deleted)') ? path.slice(0, -' (deleted)'.length) : path;
}

export async function listLoops(exec: Exec): Promise<LoopDevice[]> {
  const { stdout } = await exec('losetup', LOOP_LIST_ARGS);
  return parseLoopList(stdout);
}

export async function loopsBackedBy(exec: Exec, file: string): Promise<string[]> {
  return (await listLoops(exec)).filter((d) => d.backingFile === file).map((d) => d.name);
}

/** Whether `device` is bound to a file: sysfs shows loop/backing_file only while it is. */
export async function isLoopBound(device: string): Promise<boolean> {
  try {
    await access(`/sys/class/block/${basename(device)}/loop/backing_file`);
    return true;
  } catch {
    return false;
  }
}

/**
 * `losetup --detach DEVICE`, then proof that it happened. The kernel answers success even when
 * the device is open elsewhere: it then only arms autoclear, and the device stays bound until
 * its last user closes it. Callers check for users first; this catches the race that remains.
 */
export async function detachLoop(exec: Exec, device: string): Promise<void> {
  try {
    await exec('losetup', loopDetachArgs(device));
  } catch (err) {
    if (!(await isLoopBound(device))) return; // detached by someone else meanwhile
    throw new AttachError('ATTACH_FAILED', `cannot detach ${device}`, { cause: err });
  }
  const deadline = Date.now() + DETACH_SETTLE_MS;
  while (await isLoopBound(device)) {
    if (Date.now() >= deadline) {
      throw new AttachError('DEVICE_BUSY', `${device} is still open elsewhere; it will detach itself when closed (autoclear)`);
    }
    await sleep(POLL_INTERVAL_MS);
  }
}
