/**
 * Where the nbdfuse attacher keeps things for one export, all under the state directory:
 *
 *   STATE_DIR/NAME.json            attach record (state-file.ts)
 *   STATE_DIR/fuse-NAME/           FUSE mount point of nbdfuse
 *   STATE_DIR/fuse-NAME/nbd        the export as a file: the loop device's backing file
 *   STATE_DIR/NAME.nbdfuse.pid     written by nbdfuse once it serves (readiness), then removed
 *   STATE_DIR/NAME.nbdfuse.log     nbdfuse's stderr, while attached
 *
 * Detach removes all of them. The paths are absolute, because the kernel reports them that way
 * (loop backing files, mount points) and we compare strings.
 */
import { join, resolve } from 'node:path';

export interface NbdfuseLayout {
  exportName: string;
  stateDir: string;
  mountDir: string;
  backingFile: string;
  pidFile: string;
  logFile: string;
}

/** nbdfuse names the file inside its mount point `nbd` unless told otherwise (nbdfuse(1)). */
export const NBDFUSE_FILE_NAME = 'nbd';

export function nbdfuseLayout(stateDir: string, exportName: string): NbdfuseLayout {
  const dir = resolve(stateDir);
  const mountDir = join(dir, `fuse-${exportName}`);
  return {
    exportName,
    stateDir: dir,
    mountDir,
    backingFile: join(mountDir, NBDFUSE_FILE_NAME),
    pidFile: join(dir, `${exportName}.nbdfuse.pid`),
    logFile: join(dir, `${exportName}.nbdfuse.log`),
  };
}

/**
 * `nbdfuse -P PIDFILE MOUNTDIR URI`. nbdfuse runs in the foreground until its mount point is
 * unmounted (fusermount3 -u), and writes PIDFILE once it is ready to serve. It opens several
 * connections when the server offers multi-conn (the engine does), which is what we want.
 */
export function nbdfuseArgs(layout: NbdfuseLayout, uri: string): string[] {
  return ['-P', layout.pidFile, layout.mountDir, uri];
}

/** Whether a process argv is an nbdfuse serving `mountDir` (to find it without a pid, and to check a recorded pid). */
export function isNbdfuseFor(argv: readonly string[], mountDir: string): boolean {
  const program = argv[0] ?? '';
  return (program === 'nbdfuse' || program.endsWith('/nbdfuse')) && argv.includes(mountDir);
}
