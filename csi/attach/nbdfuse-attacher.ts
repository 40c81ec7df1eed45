/**
 * The attacher for machines without kernel NBD: nbdfuse serves the export as the file
 * STATE_DIR/fuse-NAME/nbd on a FUSE mount, and a loop device over that file is the block
 * device (/dev/loopN). Layout of the state directory: nbdfuse-layout.ts.
 *
 * Health: an export is attached when all pieces are live: the FUSE mount, an nbdfuse process
 * serving it, exactly one loop device on its file, and a read of the file succeeds. The read
 * matters: nbdfuse does not reconnect, so after an engine restart it lives on with dead
 * connections until the next request, which fails (and nbdfuse 1.14 then aborts). Anything
 * less than healthy is a leftover: attach tears it down and starts again; detach tears it down.
 *
 * Size: nbdfuse reads the export size once, at connect, and reports it as the file size for
 * its whole life; losetup --set-capacity therefore sees nothing new after the engine grows a
 * volume. `refresh` re-attaches instead, which needs the device unused (offline expansion).
 */
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { deviceSizeBytes } from '../mount/filesystem.ts';
import { readMountTable, mountsAt } from '../mount/mountinfo.ts';
import type { AttachedDevice, AttachLogger, AttachRequest, Attacher, DetachRequest, RefreshResult } from './attacher.ts';
import { silentAttachLogger } from './attacher.ts';
import { waitUntilUnused } from './device-users.ts';
import { AttachError } from './errors.ts';
import { execTool } from './exec.ts';
import type { Exec } from './exec.ts';
import { exportSizeBytes } from './export-size.ts';
import { checkExportName, nbdUnixUri } from './export-name.ts';
import { teardownFuseAttachment } from './fuse-teardown.ts';
import { KeyedLock } from './keyed-lock.ts';
import { loopAttachArgs, loopsBackedBy } from './loop.ts';
import { isNbdfuseFor, nbdfuseLayout } from './nbdfuse-layout.ts';
import type { NbdfuseLayout } from './nbdfuse-layout.ts';
import { reapNbdfuse, startNbdfuse, unmountFuse } from './nbdfuse-process.ts';
import { findProcesses, processArgv } from './proc.ts';
import { readState, writeState } from './state-file.ts';
import type { NbdfuseState } from './state-file.ts';

/** A healthy engine answers a 4 KiB read in milliseconds; a dead connection fails at once. */
const LIVENESS_READ_TIMEOUT_MS = 5_000;

export interface NbdfuseAttacherOptions {
  exec?: Exec;
  logger?: AttachLogger;
  /** The nbdfuse program; `nbdfuse` on PATH by default. */
  nbdfuseBinary?: string;
}

/** The live pieces of one export's attachment. */
export interface NbdfuseProbe {
  layout: NbdfuseLayout;
  state: NbdfuseState | undefined;
  fuseMounted: boolean;
  /** A running nbdfuse serving the mount point. */
  pid: number | undefined;
  /** Loop devices backed by the FUSE file (normally zero or one). */
  loops: string[];
  /** A direct read of the FUSE file's first block succeeded (checked only when the rest is live). */
  serving: boolean;
}

export class NbdfuseAttacher implements Attacher {
  readonly kind = 'nbdfuse';
  readonly onlineResize = false;
  readonly #exec: Exec;
  readonly #logger: AttachLogger;
  readonly #binary: string;
  readonly #lock = new KeyedLock();

  constructor(opts: NbdfuseAttacherOptions = {}) {
    this.#exec = opts.exec ?? execTool;
    this.#logger = opts.logger ?? silentAttachLogger;
    this.#binary = opts.nbdfuseBinary ?? 'nbdfuse';
  }

  async attach(req: AttachRequest): Promise<AttachedDevice> {
    checkExportName(req.exportName);
    return this.#lock.run(req.exportName, () => this.#attach(req, undefined));
  }

  async detach(req: DetachRequest): Promise<void> {
    checkExportName(req.exportName);
    return this.#lock.run(req.exportName, async () => {
      const probe = await this.probe(req.exportName, req.stateDir);
      await this.#teardown(probe);
    });
  }

  async find(exportName: string, stateDir: string): Promise<AttachedDevice | undefined> {
    checkExportName(exportName);
    return this.#lock.run(exportName, async () => {
      const devicePath = healthyDevice(await this.probe(exportName, stateDir));
      return devicePath === undefined ? undefined : { devicePath };
    });
  }

  async refresh(req: AttachRequest): Promise<RefreshResult> {
    checkExportName(req.exportName);
    return this.#lock.run(req.exportName, () => this.#refresh(req));
  }

  /** What is live for `exportName` now; exported for tests and diagnostics. */
  async probe(exportName: string, stateDir: string): Promise<NbdfuseProbe> {
    const layout = nbdfuseLayout(stateDir, exportName);
    let state: NbdfuseState | undefined;
    try {
      const recorded = await readState(layout.stateDir, exportName);
      if (recorded?.kind === 'nbdfuse') state = recorded;
    } catch (err) {
      // The record is only a hint: the live system below is what we act on.
      this.#logger.warn({ err, exportName }, 'ignoring an unreadable attach record');
    }
    const fuseMounted = mountsAt(await readMountTable(), layout.mountDir).some((m) => m.fsType.startsWith('fuse'));
    const pid = await this.#nbdfusePid(layout, state);
    const loops = await loopsBackedBy(this.#exec, layout.backingFile);
    const serving = fuseMounted && pid !== undefined && (await this.#readsBack(layout.backingFile));
    return { layout, state, fuseMounted, pid, loops, serving };
  }

  /**
   * One 4 KiB O_DIRECT read of the FUSE file (so not from the page cache), in a child process
   * with a timeout: a FUSE read that never returns must not block a thread of ours.
   */
  async #readsBack(backingFile: string): Promise<boolean> {
    try {
      await this.#exec('dd', [`if=${backingFile}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct', 'status=none'], { timeoutMs: LIVENESS_READ_TIMEOUT_MS });
      return true;
    } catch {
      return false;
    }
  }

  async #nbdfusePid(layout: NbdfuseLayout, state: NbdfuseState | undefined): Promise<number | undefined> {
    if (state) {
      const argv = await processArgv(state.pid);
      if (argv && isNbdfuseFor(argv, layout.mountDir)) return state.pid;
    }
    // No record, or its pid now belongs to someone else: look for the process by its arguments.
    const found = await findProcesses((argv) => isNbdfuseFor(argv, layout.mountDir));
    return found[0];
  }

  async #attach(req: AttachRequest, preferredDevice: string | undefined): Promise<AttachedDevice> {
    const probe = await this.probe(req.exportName, req.stateDir);
    const socketPath = resolve(req.socketPath);
    const healthy = healthyDevice(probe);
    if (healthy !== undefined && probe.pid !== undefined) {
      if (probe.state?.loopDevice !== healthy || probe.state.pid !== probe.pid || probe.state.socketPath !== socketPath) {
        await writeState(probe.layout.stateDir, this.#record(req, probe.layout, probe.pid, healthy));
      }
      return { devicePath: healthy };
    }
    if (isPartial(probe)) {
      this.#logger.warn({ exportName: req.exportName, ...summary(probe) }, 'cleaning up a partial nbdfuse attachment');
      await this.#teardown(probe);
    }
    return this.#attachFresh(req, probe.layout, preferredDevice);
  }

  async #attachFresh(req: AttachRequest, layout: NbdfuseLayout, preferredDevice: string | undefined): Promise<AttachedDevice> {
    const uri = nbdUnixUri(req.exportName, resolve(req.socketPath));
    await mkdir(layout.stateDir, { recursive: true, mode: 0o700 });
    await mkdir(layout.mountDir, { recursive: true, mode: 0o700 });
    try {
      const pid = await startNbdfuse(layout, uri, this.#binary);
      // Recorded before the loop device exists, so a crash right here leaves a findable pid.
      await writeState(layout.stateDir, this.#record(req, layout, pid, null));
      const devicePath = await this.#bindLoop(layout.backingFile, preferredDevice);
      await writeState(layout.stateDir, this.#record(req, layout, pid, devicePath));
      this.#logger.info({ exportName: req.exportName, devicePath, pid }, 'attached with nbdfuse and a loop device');
      return { devicePath };
    } catch (err) {
      await this.#teardown(await this.probe(req.exportName, layout.stateDir)).catch((undoErr: unknown) => {
        this.#logger.warn({ err: undoErr, exportName: req.exportName }, 'could not undo a failed attach');
      });
      throw err instanceof AttachError ? err : new AttachError('ATTACH_FAILED', `cannot attach ${req.exportName}`, { cause: err });
    }
  }

  async #bindLoop(backingFile: string, preferredDevice: string | undefined): Promise<string> {
    if (preferredDevice !== undefined) {
      try {
        return (await this.#exec('losetup', loopAttachArgs(backingFile, preferredDevice))).stdout.trim();
      } catch (err) {
        // Taken by someone else since we let it go: any free device will do.
        this.#logger.warn({ err, preferredDevice }, 'preferred loop device unavailable, using another');
      }
    }
    return (await this.#exec('losetup', loopAttachArgs(backingFile))).stdout.trim();
  }

  #record(req: AttachRequest, layout: NbdfuseLayout, pid: number, loopDevice: string | null): NbdfuseState {
    return { version: 1, kind: 'nbdfuse', exportName: req.exportName, socketPath: resolve(req.socketPath), mountDir: layout.mountDir, pid, loopDevice };
  }

  /**
   * Takes down whatever `probe` found, in dependency order (loop device, FUSE mount, nbdfuse,
   * files), and checks every loop device is unused before changing anything.
   */
  async #teardown(probe: NbdfuseProbe): Promise<void> {
    const { layout } = probe;
    const server = { name: 'nbdfuse', unmount: (dir: string) => unmountFuse(dir, this.#exec), reap: reapNbdfuse };
    const files = [layout.pidFile, layout.logFile];
    await teardownFuseAttachment({ ...probe, exportName: layout.exportName, stateDir: layout.stateDir, mountDir: layout.mountDir, files }, server, this.#exec, this.#logger);
  }


  async #refresh(req: AttachRequest): Promise<RefreshResult> {
    const probe = await this.probe(req.exportName, req.stateDir);
    const devicePath = healthyDevice(probe);
    if (devicePath === undefined) throw new AttachError('NOT_ATTACHED', `${req.exportName} is not attached`);
    const uri = nbdUnixUri(req.exportName, resolve(req.socketPath));
    const exportBytes = await exportSizeBytes(uri, this.#exec);
    const deviceBytes = await deviceSizeBytes(devicePath, this.#exec);
    if (deviceBytes >= exportBytes) return { devicePath, sizeBytes: deviceBytes, reattached: false };
    const users = await waitUntilUnused(devicePath);
    if (users.length > 0) {
      throw new AttachError(
        'ONLINE_RESIZE_UNSUPPORTED',
        `${req.exportName} is now ${exportBytes} bytes but ${devicePath} shows ${deviceBytes}: nbdfuse reads the size only at connect, ` +
          `so the device must be re-attached, and it is in use (${users.join(', ')})`,
      );
    }
    await this.#teardown(probe);
    const attached = await this.#attachFresh(req, probe.layout, devicePath);
    const sizeBytes = await deviceSizeBytes(attached.devicePath, this.#exec);
    return { devicePath: attached.devicePath, sizeBytes, reattached: true };
  }
}

/** The loop device when every piece is live, else undefined. */
export function healthyDevice(p: NbdfuseProbe): string | undefined {
  return p.fuseMounted && p.pid !== undefined && p.serving && p.loops.length === 1 ? p.loops[0] : undefined;
}

function isPartial(p: NbdfuseProbe): boolean {
  return p.state !== undefined || p.fuseMounted || p.pid !== undefined || p.loops.length > 0;
}

function summary(p: NbdfuseProbe): object {
  return { recorded: p.state !== undefined, fuseMounted: p.fuseMounted, pid: p.pid ?? null, loops: p.loops, serving: p.serving };
}

