/**
 * Where the fuse attacher keeps things for one export, all under the state directory:
 *
 *   STATE_DIR/NAME.json              attach record (state-file.ts)
 *   STATE_DIR/braid-fuse-NAME/       braid-fuse's FUSE mount point
 *   STATE_DIR/braid-fuse-NAME/disk   the export as a file: the loop device's backing file
 *   STATE_DIR/NAME.fuse.log          braid-fuse's log (JSON lines), while attached
 *   STATE_DIR/fuse-HASH.sock         braid-fuse's control socket
 *
 * The control socket is named by a hash of the export name: a unix socket path holds at most
 * 107 bytes, and export names may have 128. Detach removes all of them. The paths are absolute,
 * because the kernel reports them that way (loop backing files, mount points) and we compare
 * strings.
 */
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AttachError } from '../errors.ts';
import { DISK_FILE_NAME } from './disk-fs.ts';

/** sun_path is 108 bytes with its terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

export interface FuseLayout {
  exportName: string;
  stateDir: string;
  mountDir: string;
  backingFile: string;
  logFile: string;
  controlSocket: string;
}

export function fuseLayout(stateDir: string, exportName: string): FuseLayout {
  const dir = resolve(stateDir);
  const mountDir = join(dir, `braid-fuse-${exportName}`);
  const hash = createHash('sha256').update(exportName).digest('hex').slice(0, 16);
  return {
    exportName,
    stateDir: dir,
    mountDir,
    backingFile: join(mountDir, DISK_FILE_NAME),
    logFile: join(dir, `${exportName}.fuse.log`),
    controlSocket: join(dir, `fuse-${hash}.sock`),
  };
}

/** Refuses a state directory so deep that the control socket's path would not fit. */
export function checkSocketPath(layout: FuseLayout): void {
  if (Buffer.byteLength(layout.controlSocket) > MAX_SOCKET_PATH_BYTES) {
    throw new AttachError('INVALID_ARGUMENT', `the state directory ${layout.stateDir} is too long for a unix socket path inside it (at most ${MAX_SOCKET_PATH_BYTES - 27} bytes)`);
  }
}

/** The braid-fuse program, started with the running Node. */
export const BRAID_FUSE_ENTRY = fileURLToPath(new URL('./braid-fuse.ts', import.meta.url));

/** Whether a process argv is a braid-fuse serving `mountDir` (to find it without a pid, and to check a recorded pid). */
export function isBraidFuseFor(argv: readonly string[], mountDir: string): boolean {
  const entry = argv.findIndex((a) => a.endsWith('/braid-fuse.ts'));
  if (entry < 0) return false;
  const mount = argv.indexOf('--mount', entry);
  return mount > 0 && argv[mount + 1] === mountDir;
}
