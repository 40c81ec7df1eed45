/**
 * Who may connect to the daemon's unix sockets (nbd.sock, engine.sock, csi.sock). Connecting to
 * a unix socket needs write permission on the socket file and search permission on every
 * directory above it, so the file's mode and group are the access control.
 *
 * Default: 0600, the daemon's user only. `--socket-mode 0660 --socket-group GROUP` lets GROUP
 * in too; the pool directory then gets that group and g+x (search, not list), so members can
 * reach the sockets and nothing else: every other file in it is 0600.
 *
 * No moment with wider access. bind() creates the socket file with 0777 & ~umask, and only
 * after bind can we chmod it, so a permissive umask (0 in some containers) would leave a
 * window in which anyone could connect. So:
 *   1. every socket is bound under umask 077 (withPrivateUmask): it is born owner-only;
 *   2. the listeners chmod it to 0600 right after bind, as before;
 *   3. only then applySocketAccess() chowns it to the group and, last, chmods it to the final
 *      mode — chown before chmod, so that 0660 never applies to the daemon user's own group.
 * The pool directory is created 0700, a second gate during all of this.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, stat } from 'node:fs/promises';
import { isMainThread } from 'node:worker_threads';
import { EngineError } from './errors.ts';

export const DEFAULT_SOCKET_MODE = 0o600;

/** How the sockets are shared once listening. */
export interface SocketAccess {
  /** Permission bits, e.g. 0o600 or 0o660. */
  mode: number;
  /** Group to chown the sockets (and the pool directory) to; unchanged when absent. */
  gid?: number;
}

/** The umask while sockets are bound: files are born with no group or other permissions. */
const PRIVATE_UMASK = 0o077;
let privateDepth = 0;
let savedUmask = 0;

/**
 * Runs `fn` (which binds sockets) under umask 077 and restores the previous umask after. The
 * umask is process-wide: nesting is counted, and while it is in force every file the process
 * creates is owner-only, which is never wrong for the daemon's files. (Worker threads cannot
 * change the umask; there the chmod right after bind and the 0700 directory remain the gates.)
 */
export async function withPrivateUmask<T>(fn: () => Promise<T>): Promise<T> {
  if (!isMainThread) return fn();
  if (privateDepth++ === 0) {
    savedUmask = process.umask(PRIVATE_UMASK);
    process.umask(savedUmask | PRIVATE_UMASK); // never looser than the umask we were given
  }
  try {
    return await fn();
  } finally {
    if (--privateDepth === 0) process.umask(savedUmask);
  }
}

/** Gives a bound socket its final group and mode: group first, then mode (see above). */
export async function applySocketAccess(socketPath: string, access: SocketAccess): Promise<void> {
  try {
    if (access.gid !== undefined) await chown(socketPath, -1, access.gid);
    await chmod(socketPath, access.mode);
  } catch (err) {
    throw accessError(`cannot set the owner group or mode of ${socketPath}`, err);
  }
}

/**
 * Lets `gid` search (not list) the pool directory, so its members reach the sockets inside.
 * Other bits are left as they are.
 */
export async function shareDirectoryWithGroup(dir: string, gid: number): Promise<void> {
  try {
    await chown(dir, -1, gid);
    const mode = (await stat(dir)).mode & 0o7777;
    await chmod(dir, mode | 0o010);
  } catch (err) {
    throw accessError(`cannot give group ${gid} access to ${dir}`, err);
  }
}

function accessError(what: string, err: unknown): EngineError {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  const hint = code === 'EPERM' ? ' (changing a group needs root, or membership of that group)' : '';
  return new EngineError('FAILED_PRECONDITION', `${what}: ${err instanceof Error ? err.message : String(err)}${hint}`, { cause: err });
}

/**
 * `--socket-mode`: octal permission bits. The owner keeps read and write (the daemon's own
 * tools connect as the owner); no setuid, setgid or sticky bits, which mean nothing on a
 * socket.
 */
export function parseSocketMode(text: string): number {
  if (!/^0?[0-7]{3}$/.test(text)) {
    throw new EngineError('INVALID_ARGUMENT', `invalid socket mode ${JSON.stringify(text)}: use three octal digits, e.g. 0600 or 0660`);
  }
  const mode = Number.parseInt(text, 8);
  if ((mode & 0o600) !== 0o600) {
    throw new EngineError('INVALID_ARGUMENT', `invalid socket mode ${text}: the owner needs read and write (0600 at least)`);
  }
  return mode;
}

/** Looks a group up through the system's group database (getent: /etc/group, LDAP, ...). */
export type GroupLookup = (name: string) => Promise<number | undefined>;

/** `--socket-group`: a group name or a numeric gid. An unknown name is an error. */
export async function resolveGroup(text: string, lookup: GroupLookup = getentGroup): Promise<number> {
  if (/^\d{1,10}$/.test(text)) {
    const gid = Number(text);
    if (gid <= 0xfffffffe) return gid;
  }
  if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,63}\$?$/.test(text)) {
    throw new EngineError('INVALID_ARGUMENT', `invalid group ${JSON.stringify(text)}: give a group name or a numeric gid`);
  }
  const gid = await lookup(text);
  if (gid === undefined) throw new EngineError('INVALID_ARGUMENT', `unknown group ${JSON.stringify(text)}: no such group on this system`);
  return gid;
}

/** `getent group NAME`: exit 0 and `name:x:gid:members`, or exit 2 when there is no such group. */
function getentGroup(name: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    execFile('getent', ['group', name], { timeout: 10_000 }, (err, stdout) => {
      if (err) {
        if (typeof err.code === 'number' && err.code === 2) resolve(undefined);
        else reject(new EngineError('FAILED_PRECONDITION', `cannot look up group ${JSON.stringify(name)}: ${err.message}`, { cause: err }));
        return;
      }
      const gid = Number(String(stdout).split(':')[2]);
      resolve(Number.isInteger(gid) && gid >= 0 ? gid : undefined);
    });
  });
}
