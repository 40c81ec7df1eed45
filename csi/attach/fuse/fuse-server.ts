/**
 * One braid-fuse server: an NBD export of the engine served as the file MOUNT_DIR/disk.
 *
 * Start-up, in this order, so that each failure leaves nothing behind and is reported:
 *   1. connect to the engine (NBD_OPT_GO): an export that does not exist fails here;
 *   2. open /dev/fuse and mount it at MOUNT_DIR (fuse-mount.ts);
 *   3. start reading requests and wait for the kernel's INIT;
 *   4. listen on the control socket: from now on the attacher sees the server as ready.
 *
 * The server runs until its mount is unmounted (`umount MOUNT_DIR`, which the attacher does on
 * detach): then the reads of /dev/fuse end, a final NBD FLUSH makes what was acknowledged
 * durable, and it exits 0. SIGTERM and SIGINT are ignored while mounted: ending the process
 * would leave a dead mount under a loop device ("Transport endpoint is not connected").
 */
import { closeSync, openSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { Server } from 'node:net';
import { listenControl } from './control.ts';
import type { ResizeResult, ServerStatus } from './control.ts';
import { DiskFilesystem } from './disk-fs.ts';
import { IN_HEADER_BYTES, WRITE_IN_BYTES } from './fuse-abi.ts';
import { mountFuse, unmountLazily } from './fuse-mount.ts';
import { FuseSession } from './fuse-session.ts';
import { NbdClient } from './nbd-client.ts';
import type { ClientLogger } from './nbd-client.ts';

/** The largest READ/WRITE the kernel sends us: 256 pages, what FUSE allows by default. */
export const DEFAULT_MAX_WRITE_BYTES = 1024 * 1024;
/** Reads of /dev/fuse kept outstanding (each holds a libuv pool thread while it waits). */
export const DEFAULT_READERS = 4;
/** libuv pool threads braid-fuse needs: one per blocked /dev/fuse read, and some for everything else. */
export const THREADPOOL_SIZE = DEFAULT_READERS + 4;
/** The kernel answers INIT as soon as the mount exists. */
const INIT_TIMEOUT_MS = 10_000;
const PAGE_BYTES = 4096;

export interface FuseServerOptions {
  /** The engine's NBD socket. */
  socketPath: string;
  exportName: string;
  mountDir: string;
  controlSocket: string;
  reconnectTimeoutMs?: number;
  replayLimitBytes?: number;
  maxWriteBytes?: number;
  readers?: number;
  logger: ClientLogger;
}

/** Serves until unmounted. Rejects when start-up fails (after undoing what it did). */
export async function runFuseServer(opts: FuseServerOptions): Promise<void> {
  const log = opts.logger;
  let fs: DiskFilesystem | undefined;
  const client = await NbdClient.open({
    socketPath: opts.socketPath,
    exportName: opts.exportName,
    logger: log,
    ...(opts.reconnectTimeoutMs === undefined ? {} : { reconnectTimeoutMs: opts.reconnectTimeoutMs }),
    ...(opts.replayLimitBytes === undefined ? {} : { replayLimitBytes: opts.replayLimitBytes }),
    onSizeChange: (sizeBytes) => {
      log.info({ sizeBytes }, 'the export changed size');
      fs?.sizeChanged().catch((err: unknown) => log.warn({ err }, 'could not tell the kernel the new size'));
    },
  });
  const maxWriteBytes = negotiatedMaxWrite(opts.maxWriteBytes ?? DEFAULT_MAX_WRITE_BYTES, client.maxPayloadBytes);
  const fd = openSync('/dev/fuse', 'r+');
  let control: Server | undefined;
  let mounted = false;
  let unmounted = false;
  try {
    await mountFuse(fd, opts.mountDir, opts.exportName);
    mounted = true;
    const session = new FuseSession({ fd, readers: opts.readers ?? DEFAULT_READERS, bufferBytes: IN_HEADER_BYTES + WRITE_IN_BYTES + maxWriteBytes, logger: log });
    fs = new DiskFilesystem({ backend: client, replier: session, logger: log, maxWriteBytes, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
    session.start(fs);
    await withTimeout(fs.initialized, INIT_TIMEOUT_MS, 'the kernel sent no FUSE INIT');
    const served = fs;
    control = await listenControl(opts.controlSocket, {
      status: () => statusOf(opts, client),
      resize: () => resize(client, served),
    });
    log.info({ exportName: opts.exportName, mountDir: opts.mountDir, sizeBytes: client.sizeBytes, maxWriteBytes }, 'braid-fuse serving');
    await session.ended;
    unmounted = true;
    log.info({ mountDir: opts.mountDir }, 'unmounted; stopping');
  } finally {
    if (mounted && !unmounted) await unmountLazily(opts.mountDir); // start-up failed after the mount
    control?.close();
    await rm(opts.controlSocket, { force: true });
    await client.close();
    closeSync(fd);
  }
}

function statusOf(opts: FuseServerOptions, client: NbdClient): ServerStatus {
  return { pid: process.pid, exportName: opts.exportName, mountDir: opts.mountDir, ...client.status() };
}

async function resize(client: NbdClient, fs: DiskFilesystem): Promise<ResizeResult> {
  const previousBytes = client.sizeBytes;
  const sizeBytes = await client.querySize();
  // Told again even when the reconnect path already did: the answer must follow the notice.
  if (sizeBytes !== previousBytes) await fs.sizeChanged();
  return { sizeBytes, previousBytes };
}

/** Our max_write, lowered to what the engine takes in one request, in whole pages. */
export function negotiatedMaxWrite(wanted: number, serverMax: number | undefined): number {
  const limit = serverMax === undefined ? wanted : Math.min(wanted, serverMax);
  return Math.max(PAGE_BYTES, Math.floor(limit / PAGE_BYTES) * PAGE_BYTES);
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
