/**
 * Mounting a FUSE filesystem without libfuse: the server opens /dev/fuse itself and util-linux
 * mount(8) makes the mount(2) call with `fd=3`, the descriptor handed to it as its fd 3, so that
 * the kernel ties the new mount to our open /dev/fuse. `-i` keeps mount from looking for a
 * mount.fuse helper. The type `fuse.braid` shows in /proc/self/mountinfo, which is how our
 * mounts are told from others.
 *
 * fusermount3 cannot be used to mount here: it passes the /dev/fuse descriptor back over a unix
 * socket (SCM_RIGHTS), which Node cannot receive without native code. We run as root, so plain
 * mount(8) is allowed.
 */
import { spawn } from 'node:child_process';

export const FUSE_FS_TYPE = 'fuse.braid';
/** mount(8) returns at once; this bounds a hung one. */
const MOUNT_TIMEOUT_MS = 30_000;

export function fuseMountArgs(mountDir: string, exportName: string, uid: number, gid: number): string[] {
  // rootmode: the root is a directory (S_IFDIR, octal). allow_other: the loop device and its
  // users are other processes. default_permissions: the kernel checks modes for us.
  const options = ['fd=3', 'rootmode=40000', `user_id=${uid}`, `group_id=${gid}`, 'allow_other', 'default_permissions'];
  return ['-i', '-t', FUSE_FS_TYPE, '-o', options.join(','), `braid:${exportName}`, mountDir];
}

/** Mounts `mountDir` on the open /dev/fuse `fuseFd`. Reads of the fd work only after this resolves. */
export function mountFuse(fuseFd: number, mountDir: string, exportName: string): Promise<void> {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return new Promise((resolve, reject) => {
    const child = spawn('mount', fuseMountArgs(mountDir, exportName, uid, gid), { stdio: ['ignore', 'ignore', 'pipe', fuseFd] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), MOUNT_TIMEOUT_MS);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run mount(8): ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`mount(8) of ${mountDir} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
    });
  });
}

/** Lazily unmounts `mountDir` (umount -l): for a server whose start-up failed after mounting. */
export function unmountLazily(mountDir: string): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn('umount', ['-l', mountDir], { stdio: 'ignore' });
    child.once('error', () => resolve());
    child.once('close', () => resolve());
  });
}
