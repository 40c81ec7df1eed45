/**
 * Taking down a FUSE-file attachment (a loop device over a file that a FUSE server serves),
 * shared by the `fuse` and `nbdfuse` attachers: they differ only in how their server is
 * unmounted and reaped and which files it leaves.
 *
 * Order matters: every loop device is checked unused before anything changes (detach never
 * pulls a device from under a user), then loop devices, the FUSE mount, the server process,
 * its files, the mount point and last the state record.
 */
import { rm, rmdir } from 'node:fs/promises';
import { mountsAt, readMountTable } from '../mount/mountinfo.ts';
import type { AttachLogger } from './attacher.ts';
import { waitUntilUnused } from './device-users.ts';
import { AttachError } from './errors.ts';
import type { Exec } from './exec.ts';
import { detachLoop } from './loop.ts';
import { removeState } from './state-file.ts';

export interface FuseAttachment {
  exportName: string;
  stateDir: string;
  mountDir: string;
  fuseMounted: boolean;
  /** The FUSE server's pid, when it is running. */
  pid: number | undefined;
  loops: string[];
  /** Files the server leaves next to the mount (pid file, control socket, log). */
  files: string[];
}

export interface FuseServerOps {
  /** The server's name, for log lines. */
  name: string;
  unmount(mountDir: string): Promise<void>;
  /** Waits for the server to end after its unmount. */
  reap(pid: number): Promise<'exited' | string>;
}

export async function teardownFuseAttachment(a: FuseAttachment, server: FuseServerOps, exec: Exec, logger: AttachLogger): Promise<void> {
  for (const loop of a.loops) {
    const users = await waitUntilUnused(loop);
    if (users.length > 0) throw new AttachError('DEVICE_BUSY', `${loop} is in use (${users.join(', ')}): not detaching it`);
  }
  for (const loop of a.loops) await detachLoop(exec, loop);
  if (a.fuseMounted) {
    try {
      await server.unmount(a.mountDir);
    } catch (err) {
      const stillMounted = mountsAt(await readMountTable(), a.mountDir).length > 0;
      if (stillMounted) throw new AttachError('DEVICE_BUSY', `cannot unmount ${a.mountDir}: its file is in use`, { cause: err });
    }
  }
  if (a.pid !== undefined) {
    const ended = await server.reap(a.pid);
    if (ended !== 'exited') logger.warn({ pid: a.pid, ended }, `${server.name} did not exit after its unmount`);
  }
  for (const file of a.files) await rm(file, { force: true });
  await rmdir(a.mountDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
  await removeState(a.stateDir, a.exportName);
}
