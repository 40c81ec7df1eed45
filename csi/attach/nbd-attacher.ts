/**
 * The production attacher: kernel NBD through nbd-client (netlink, its default since 3.17),
 * which negotiates with the engine over its unix socket, hands the socket to the kernel and
 * exits; /dev/nbdN then talks to the engine with no process of ours in the data path.
 *
 * Finding a device: /sys/block/nbdN/pid exists exactly while nbdN is connected, so a device
 * without it is free. Two attachers may pick the same free device at once; the loser's
 * nbd-client fails, and we move on to the next free device (bounded).
 *
 * Which export is on which device: nbd-client 3.24 does not label the device with the export
 * (no netlink backend identifier), so the state file records it, and `nbd-client -c` (exit 0
 * when connected, 1 when not, 2 on error: nbd-client(8)) confirms the device is still up.
 *
 * Not done: -persist (it needs nbd-client to stay running in ioctl mode). After an engine
 * restart, I/O on the device fails until it is re-attached.
 *
 * Size: the kernel takes the size at connect. Growing needs NBD netlink reconfigure or the
 * NBD_SET_SIZE ioctl, which nbd-client does not offer; `refresh` re-attaches instead (offline).
 *
 * This kernel (CI) has no nbd module, so this file is covered by unit tests of its commands
 * only; test/attach.test.ts skips its device tests with the reason from isSupported().
 */
import { access, mkdir, readdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { deviceSizeBytes } from '../mount/filesystem.ts';
import type { AttachedDevice, AttachLogger, AttachRequest, Attacher, DetachRequest, RefreshResult } from './attacher.ts';
import { silentAttachLogger } from './attacher.ts';
import { waitUntilUnused } from './device-users.ts';
import { AttachError } from './errors.ts';
import { ExecError, execTool, exitedWith } from './exec.ts';
import type { Exec } from './exec.ts';
import { checkExportName, nbdUnixUri } from './export-name.ts';
import { exportSizeBytes } from './export-size.ts';
import { KeyedLock } from './keyed-lock.ts';
import { readState, removeState, writeState } from './state-file.ts';
import type { NbdState } from './state-file.ts';

/** nbd-client -c exits 0 when connected, 1 when not, 2 on error (nbd-client(8)). */
const CHECK_NOT_CONNECTED = 1;
/** Devices tried per attach before giving up on races with other attachers. */
const MAX_CONNECT_ATTEMPTS = 8;
const SYSFS = '/sys';

export function nbdConnectArgs(socketPath: string, exportName: string, device: string): string[] {
  return ['-unix', socketPath, device, '-name', exportName];
}

export function nbdDisconnectArgs(device: string): string[] {
  return ['-d', device];
}

export function nbdCheckArgs(device: string): string[] {
  return ['-c', device];
}

/** nbdN names under /sys/block in numeric order. */
export function sortNbdNames(names: readonly string[]): string[] {
  return names.filter((n) => /^nbd\d+$/.test(n)).sort((a, b) => Number(a.slice(3)) - Number(b.slice(3)));
}

export interface Support {
  supported: boolean;
  /** Why not, in one sentence, when unsupported. */
  reason: string;
}

/** Kernel NBD is usable when the nbd module is loaded (or loads) and nbd-client is installed. */
export async function nbdSupport(exec: Exec = execTool, sysfs: string = SYSFS): Promise<Support> {
  const module = join(sysfs, 'module', 'nbd');
  if (!(await exists(module))) {
    // A missing modprobe, or one that fails, both mean no module for us.
    await exec('modprobe', ['nbd']).catch(() => undefined);
    if (!(await exists(module))) return { supported: false, reason: 'the kernel has no nbd module (/sys/module/nbd missing, modprobe nbd failed)' };
  }
  try {
    await exec('nbd-client', ['-V']);
  } catch (err) {
    // `nbd-client -V` exits non-zero on some versions; only a missing program matters here.
    if (err instanceof ExecError && err.code === 'EXEC_NOT_FOUND') return { supported: false, reason: 'nbd-client is not installed' };
  }
  return { supported: true, reason: '' };
}

export interface NbdAttacherOptions {
  exec?: Exec;
  logger?: AttachLogger;
  /** Where sysfs is mounted; tests point it at a fake tree. */
  sysfs?: string;
}

export class NbdAttacher implements Attacher {
  readonly kind = 'nbd';
  readonly onlineResize = false;
  readonly #exec: Exec;
  readonly #logger: AttachLogger;
  readonly #sysBlock: string;
  readonly #lock = new KeyedLock();

  constructor(opts: NbdAttacherOptions = {}) {
    this.#exec = opts.exec ?? execTool;
    this.#logger = opts.logger ?? silentAttachLogger;
    this.#sysBlock = join(opts.sysfs ?? SYSFS, 'block');
  }

  async attach(req: AttachRequest): Promise<AttachedDevice> {
    checkExportName(req.exportName);
    return this.#lock.run(req.exportName, () => this.#attach(req, undefined));
  }

  async detach(req: DetachRequest): Promise<void> {
    checkExportName(req.exportName);
    return this.#lock.run(req.exportName, () => this.#detach(req));
  }

  async find(exportName: string, stateDir: string): Promise<AttachedDevice | undefined> {
    checkExportName(exportName);
    return this.#lock.run(exportName, async () => {
      const state = await this.#readState(stateDir, exportName);
      if (!state || !(await this.isConnected(state.devicePath))) return undefined;
      return { devicePath: state.devicePath };
    });
  }

  async refresh(req: AttachRequest): Promise<RefreshResult> {
    checkExportName(req.exportName);
    return this.#lock.run(req.exportName, async () => {
      const state = await this.#readState(req.stateDir, req.exportName);
      if (!state || !(await this.isConnected(state.devicePath))) throw new AttachError('NOT_ATTACHED', `${req.exportName} is not attached`);
      const exportBytes = await exportSizeBytes(nbdUnixUri(req.exportName, resolve(req.socketPath)), this.#exec);
      const deviceBytes = await deviceSizeBytes(state.devicePath, this.#exec);
      if (deviceBytes >= exportBytes) return { devicePath: state.devicePath, sizeBytes: deviceBytes, reattached: false };
      const users = await waitUntilUnused(state.devicePath);
      if (users.length > 0) {
        throw new AttachError('ONLINE_RESIZE_UNSUPPORTED', `${state.devicePath} must be re-attached to see ${exportBytes} bytes, and it is in use (${users.join(', ')})`);
      }
      await this.#detach(req);
      const attached = await this.#attach(req, state.devicePath);
      return { ...attached, sizeBytes: await deviceSizeBytes(attached.devicePath, this.#exec), reattached: true };
    });
  }

  /** `nbd-client -c DEVICE`: true when connected, false when not; other failures throw. */
  async isConnected(device: string): Promise<boolean> {
    try {
      await this.#exec('nbd-client', nbdCheckArgs(device));
      return true;
    } catch (err) {
      if (exitedWith(err, CHECK_NOT_CONNECTED)) return false;
      throw new AttachError('ATTACH_FAILED', `cannot check ${device}`, { cause: err });
    }
  }

  async #attach(req: AttachRequest, preferredDevice: string | undefined): Promise<AttachedDevice> {
    const existing = await this.#readState(req.stateDir, req.exportName);
    if (existing && (await this.isConnected(existing.devicePath))) return { devicePath: existing.devicePath };
    const socketPath = resolve(req.socketPath);
    await mkdir(resolve(req.stateDir), { recursive: true, mode: 0o700 });
    const tried = new Set<string>();
    for (let attempt = 0; attempt < MAX_CONNECT_ATTEMPTS; attempt++) {
      const device = await this.#freeDevice(tried, preferredDevice);
      tried.add(device);
      try {
        await this.#exec('nbd-client', nbdConnectArgs(socketPath, req.exportName, device));
      } catch (err) {
        // Lost a race for this device, or the connect failed; only a device that is now taken
        // is worth another try.
        if (!(await this.#isFree(basename(device)))) continue;
        throw new AttachError('ATTACH_FAILED', `nbd-client could not connect ${req.exportName} to ${device}`, { cause: err });
      }
      const state: NbdState = { version: 1, kind: 'nbd', exportName: req.exportName, socketPath, devicePath: device };
      await writeState(req.stateDir, state);
      this.#logger.info({ exportName: req.exportName, devicePath: device }, 'attached with kernel NBD');
      return { devicePath: device };
    }
    throw new AttachError('NO_FREE_DEVICE', `no free /dev/nbdN after ${MAX_CONNECT_ATTEMPTS} attempts`);
  }

  async #detach(req: DetachRequest): Promise<void> {
    const state = await this.#readState(req.stateDir, req.exportName);
    if (!state) return;
    if (await this.isConnected(state.devicePath)) {
      const users = await waitUntilUnused(state.devicePath);
      if (users.length > 0) throw new AttachError('DEVICE_BUSY', `${state.devicePath} is in use (${users.join(', ')}): not detaching it`);
      await this.#exec('nbd-client', nbdDisconnectArgs(state.devicePath));
    }
    await removeState(req.stateDir, req.exportName);
  }

  /** The preferred device if free, else the first free /dev/nbdN not tried yet. */
  async #freeDevice(tried: ReadonlySet<string>, preferred: string | undefined): Promise<string> {
    if (preferred !== undefined && !tried.has(preferred) && (await this.#isFree(basename(preferred)))) return preferred;
    for (const name of sortNbdNames(await readdir(this.#sysBlock))) {
      if (!tried.has(`/dev/${name}`) && (await this.#isFree(name))) return `/dev/${name}`;
    }
    throw new AttachError('NO_FREE_DEVICE', 'every /dev/nbdN is connected (raise the nbd module parameter nbds_max)');
  }

  /** /sys/block/nbdN/pid exists exactly while nbdN is connected. */
  async #isFree(name: string): Promise<boolean> {
    return !(await exists(join(this.#sysBlock, name, 'pid')));
  }

  async #readState(stateDir: string, exportName: string): Promise<NbdState | undefined> {
    const state = await readState(resolve(stateDir), exportName);
    if (state && state.kind !== 'nbd') throw new AttachError('STATE_CORRUPT', `${exportName} was attached by the ${state.kind} attacher`);
    return state;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
