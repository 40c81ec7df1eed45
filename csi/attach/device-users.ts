/**
 * Who uses a block device: mounts of it, kernel holders (device-mapper, md), and processes with
 * it open (a VM's qemu in block mode). Detach asks this first, because the kernel would not
 * refuse: LOOP_CLR_FD on an open loop device only marks it "autoclear" and returns success,
 * and the device then vanishes later, when the last user closes it.
 *
 * Open descriptors can be transient (udev probes a device for a few milliseconds after each
 * change), so `waitUntilUnused` retries briefly before it reports the device busy.
 */
import { readdir, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { majorMinorOf } from '../mount/mount.ts';
import { readMountTable } from '../mount/mountinfo.ts';
import { processesWithDeviceOpen, sleep } from './proc.ts';

/** How long an open descriptor may take to go away before the device counts as busy. */
export const TRANSIENT_OPEN_GRACE_MS = 2_000;
const RECHECK_INTERVAL_MS = 100;

/** Human-readable uses of `devicePath` ("mounted at /x", "held by dm-0", "open by pid 12"); empty when unused. */
export async function deviceUsers(devicePath: string): Promise<string[]> {
  const rdev = (await stat(devicePath)).rdev;
  const majorMinor = majorMinorOf(rdev);
  const users: string[] = [];
  for (const m of await readMountTable()) {
    if (m.majorMinor === majorMinor) users.push(`mounted at ${m.mountPoint}`);
  }
  const holders = await readdir(`/sys/class/block/${basename(devicePath)}/holders`).catch(() => []);
  for (const h of holders) users.push(`held by ${h}`);
  for (const pid of await processesWithDeviceOpen(rdev)) users.push(`open by pid ${pid}`);
  return users;
}

/** [] once the device is unused; otherwise its users after the grace period. */
export async function waitUntilUnused(devicePath: string, graceMs: number = TRANSIENT_OPEN_GRACE_MS): Promise<string[]> {
  const deadline = Date.now() + graceMs;
  for (;;) {
    const users = await deviceUsers(devicePath);
    if (users.length === 0) return users;
    // Mounts and holders do not go away by themselves: no point waiting for them.
    const onlyOpens = users.every((u) => u.startsWith('open by'));
    if (!onlyOpens || Date.now() >= deadline) return users;
    await sleep(RECHECK_INTERVAL_MS);
  }
}
