/**
 * An Attacher turns an NBD export of the engine into a kernel block device on this node, and
 * back. Three implementations (DESIGN.md §2, "Node attach"):
 *   - `nbd`: kernel NBD through nbd-client → /dev/nbdN (production where the module exists);
 *   - `fuse`: braid-fuse, our own FUSE server (csi/attach/fuse/), exposes the export as a file,
 *     and a loop device over that file gives /dev/loopN. It reconnects across engine restarts
 *     (replaying unflushed writes) and grows online. The default without the nbd module;
 *   - `nbdfuse`: the same shape with libnbd's nbdfuse: no reconnect, offline growth only.
 *
 * Contract, the same for all:
 *   - Every operation is idempotent and keyed by export name: attaching an attached export
 *     returns the same device; detaching a detached one succeeds.
 *   - What is attached is recorded in `stateDir` (one small JSON file per export, replaced
 *     atomically), but the live system (loop devices, mounts, processes, nbd devices) is the
 *     truth: a fresh Attacher, e.g. after a plugin restart, finds and detaches what an earlier
 *     one attached.
 *   - Detach never pulls a device from under a user: a mounted or open device is DEVICE_BUSY,
 *     with nothing changed.
 *   - Operations on one export are serialised within a process. Two processes working on the
 *     same export at once (the plugin and a `braid attach` by hand) are not guarded against.
 */

export type AttacherKind = 'nbd' | 'fuse' | 'nbdfuse';

export interface AttachRequest {
  /** The export (volume) name, as the engine serves it. */
  exportName: string;
  /** The engine's NBD unix socket (DIR/nbd.sock). */
  socketPath: string;
  /** Where this attacher keeps its state; created if missing. */
  stateDir: string;
}

export interface DetachRequest {
  exportName: string;
  stateDir: string;
}

export interface AttachedDevice {
  /** /dev/nbdN or /dev/loopN. */
  devicePath: string;
}

export interface RefreshResult extends AttachedDevice {
  /** What the device reports after the refresh. */
  sizeBytes: number;
  /** True when the device had to be detached and attached again to see the new size. */
  reattached: boolean;
}

export interface Attacher {
  readonly kind: AttacherKind;
  /**
   * Whether `refresh` can make a device that is in use (mounted, open) see a grown export. Only
   * `fuse` can: NBD has no way for a server to announce a new size, nbd-client and nbdfuse read
   * it once at connect, while braid-fuse asks again when told. The Identity service advertises
   * ONLINE expansion exactly when the node's attacher has this.
   */
  readonly onlineResize: boolean;
  attach(req: AttachRequest): Promise<AttachedDevice>;
  detach(req: DetachRequest): Promise<void>;
  /** The device of an attached, healthy export, or undefined. */
  find(exportName: string, stateDir: string): Promise<AttachedDevice | undefined>;
  /**
   * Makes the device see the export's current size. A no-op when it already does. With
   * `onlineResize`, the device grows in place, in use or not; otherwise a detach and attach (on
   * the same device node when it is still free), which needs the device unused:
   * ONLINE_RESIZE_UNSUPPORTED when it is in use.
   */
  refresh(req: AttachRequest): Promise<RefreshResult>;
}

/** What the attachers and select.ts log; pino's Logger satisfies it. */
export interface AttachLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export const silentAttachLogger: AttachLogger = { info: () => {}, warn: () => {} };
