/**
 * Real-device helpers for the attach tests: what loop devices and mounts are live, tearing
 * down whatever a failed test left under a directory, and files with checksums to prove data
 * survives. Needs root (losetup, umount).
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { findProcesses, waitForExit } from '../../csi/attach/proc.ts';
import { parseMountInfo } from '../../csi/mount/mountinfo.ts';
import { run, runOk } from '../harness.ts';

export interface LiveDevices {
  mounts: { mountPoint: string; fsType: string }[];
  loops: { name: string; backingFile: string }[];
}

export async function liveDevices(): Promise<LiveDevices> {
  const mounts = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  const listed = JSON.parse((await runOk('losetup', ['--json', '--list'])).stdout || '{"loopdevices":[]}') as { loopdevices: { name: string; 'back-file': string }[] };
  return { mounts, loops: listed.loopdevices.map((d) => ({ name: d.name, backingFile: d['back-file'].replace(/ \(deleted\)$/, '') })) };
}

/** A FUSE server of either attacher (nbdfuse, braid-fuse). */
function isFuseServer(argv: readonly string[]): boolean {
  return argv[0]?.endsWith('nbdfuse') === true || argv.some((a) => a.endsWith('/braid-fuse.ts'));
}

/** Unmounts, detaches and stops everything under `dir`, in dependency order, ignoring errors. */
export async function cleanUpDevicesUnder(dir: string): Promise<void> {
  const under = (p: string): boolean => p.startsWith(`${dir}/`);
  const { mounts, loops } = await liveDevices();
  const byDepth = mounts.filter((m) => under(m.mountPoint)).sort((a, b) => b.mountPoint.length - a.mountPoint.length);
  const unmount = async (mountPoint: string): Promise<void> => {
    if ((await run('umount', [mountPoint])).code !== 0) await run('umount', ['-l', mountPoint]);
  };
  // Filesystems first, then the loop devices under them, then the FUSE mounts they sat on.
  for (const m of byDepth.filter((m) => !m.fsType.startsWith('fuse'))) await unmount(m.mountPoint);
  for (const l of loops.filter((l) => under(l.backingFile))) await run('losetup', ['--detach', l.name]);
  for (const m of byDepth.filter((m) => m.fsType.startsWith('fuse'))) await unmount(m.mountPoint);
  for (const pid of await findProcesses((argv) => isFuseServer(argv) && argv.some(under))) {
    if (!(await waitForExit(pid, 5_000))) process.kill(pid, 'SIGKILL');
  }
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes files of random content under `dir`; returns name → sha256. */
export async function writeFiles(dir: string, sizes: readonly number[]): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (const [i, size] of sizes.entries()) {
    const data = randomBytes(size);
    await writeFile(join(dir, `file-${i}`), data);
    sums.set(`file-${i}`, sha256(data));
  }
  return sums;
}

export async function readSums(dir: string, names: Iterable<string>): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (const name of names) sums.set(name, sha256(await readFile(join(dir, name))));
  return sums;
}
