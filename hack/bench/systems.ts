// The three systems the benchmark compares, each serving N thin VM disks over NBD on unix
// sockets inside its own directory of the run's scratch directory:
//
//   engine   one `braid serve` (every VM in one log, group commit)
//   perfile  one qemu-nbd per VM over its own sparse raw file: what a hypervisor does natively
//   nbdkit   one nbdkit with the file plugin in dir= mode: one process serving every VM's file
//
// A system is started, serves fio, reports the PIDs whose CPU we charge to it, and stops.
// Starting either completes or stops what it had started and throws.

import { closeSync, ftruncateSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { runOk, spawnServer, stopServer, waitForSockets, type Server } from './proc.ts';

export const SYSTEM_KINDS = ['engine', 'perfile', 'nbdkit'] as const;
export type SystemKind = (typeof SYSTEM_KINDS)[number];

/** Column labels. */
export const SYSTEM_LABELS: Record<SystemKind, string> = {
  engine: 'engine (braid)',
  perfile: 'per-file qemu-nbd',
  nbdkit: 'nbdkit file dir=',
};

/**
 * How each per-file qemu-nbd opens its raw file.
 * writeback: host page cache, a FLUSH is an fdatasync; the same cache the engine writes through,
 *   so the default (and apples to apples). --aio=threads because Linux native AIO needs O_DIRECT.
 * none: O_DIRECT (cache.direct=on) with --aio=native, KubeVirt's default when the filesystem
 *   supports it; a FLUSH is still an fdatasync.
 */
export type PerFileCache = 'writeback' | 'none';

export interface SystemSpec {
  kind: SystemKind;
  /** This system's own directory (created if missing). */
  dir: string;
  vms: readonly string[];
  volumeSizeBytes: number;
  repoDir: string;
  perFileCache: PerFileCache;
  /** Engine only: create the volumes with inline dedup. */
  dedup?: boolean;
}

export interface EngineStats {
  writesPerBatch: number;
  flushesPerFdatasync: number;
}

export interface RunningSystem {
  readonly kind: SystemKind;
  /** VM name → NBD URI. */
  readonly uris: ReadonlyMap<string, string>;
  /** Server PIDs whose CPU (threads and children included) is charged to this system. */
  pids(): number[];
  /** Coalescing figures; engine only. */
  engineStats(): Promise<EngineStats | undefined>;
  stop(): Promise<void>;
}

/** sun_path is 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;
/** `braid volume create` runs at a time: each is a Node start-up, and the machine may have 2 cores. */
const VOLUME_CREATE_CONCURRENCY = 4;

function checkSocketPath(path: string): string {
  // The path goes into an NBD URI's query and a fio job file unquoted: keep it to plain characters.
  if (!/^[A-Za-z0-9/._+-]+$/.test(path)) {
    throw new Error(`socket path has characters an NBD URI would need escaped: ${path}; use a plainer --dir`);
  }
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new Error(`socket path longer than ${MAX_SOCKET_PATH_BYTES} bytes: ${path}; use a shorter --dir`);
  }
  return path;
}

function nbdUri(exportName: string, socketPath: string): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socketPath}`;
}

/** A thin (sparse) raw disk file, like `truncate -s SIZE`. */
export function createSparseFile(path: string, sizeBytes: number): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, sizeBytes);
  } finally {
    closeSync(fd);
  }
}

async function stopAll(servers: readonly Server[]): Promise<void> {
  await Promise.all(servers.map((s) => stopServer(s)));
}

function pidsOf(servers: readonly Server[]): number[] {
  return servers.flatMap((s) => (s.child.pid === undefined ? [] : [s.child.pid]));
}

/** Runs tasks with at most `limit` in flight; the first failure is thrown after all settle. */
async function inBatches<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  const errors: unknown[] = [];
  const worker = async (): Promise<void> => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
      await task(item).catch((error: unknown) => errors.push(error));
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (errors.length > 0) throw errors[0];
}

// --- engine -------------------------------------------------------------------------------------

export function braidBin(repoDir: string): string {
  return join(repoDir, 'bin', 'braid');
}

async function startEngine(spec: SystemSpec, create: boolean): Promise<RunningSystem> {
  const dataDir = join(spec.dir, 'braid');
  mkdirSync(dataDir, { recursive: true });
  const nbdSock = checkSocketPath(join(dataDir, 'nbd.sock'));
  const engineSock = checkSocketPath(join(dataDir, 'engine.sock'));
  const bin = braidBin(spec.repoDir);
  const server = spawnServer('braid serve', bin, ['serve', '--data', dataDir], join(spec.dir, 'braid-serve.log'));
  try {
    await waitForSockets(server, [engineSock, nbdSock]);
    if (create) {
      const size = String(spec.volumeSizeBytes);
      await inBatches(spec.vms, VOLUME_CREATE_CONCURRENCY, async (vm) => {
        const dedup = spec.dedup === true ? ['--dedup'] : [];
        await runOk(bin, ['volume', 'create', vm, '--size', size, ...dedup, '--data', dataDir], { timeoutMs: 60_000 });
      });
    }
  } catch (error) {
    await stopServer(server);
    throw error;
  }
  return {
    kind: 'engine',
    uris: new Map(spec.vms.map((vm) => [vm, nbdUri(vm, nbdSock)])),
    pids: () => pidsOf([server]),
    engineStats: async () => {
      const text = await runOk(bin, ['stats', '--json', '--data', dataDir], { timeoutMs: 60_000 });
      return parseEngineStats(text);
    },
    stop: () => stopServer(server),
  };
}

/** Picks the coalescing figures out of `braid stats --json`. */
export function parseEngineStats(text: string): EngineStats {
  const doc: unknown = JSON.parse(text);
  if (typeof doc !== 'object' || doc === null) throw new Error('braid stats --json: not an object');
  const record = doc as Record<string, unknown>;
  const pick = (key: string): number => {
    const value = record[key];
    if (typeof value !== 'number') throw new Error(`braid stats --json: ${key} is not a number`);
    return value;
  };
  return { writesPerBatch: pick('writesPerBatch'), flushesPerFdatasync: pick('flushesPerFdatasync') };
}

// --- per-file qemu-nbd ---------------------------------------------------------------------------

/** qemu-nbd arguments for one VM; exported for the README and tests. */
export function qemuNbdArgs(socketPath: string, exportName: string, file: string, cache: PerFileCache): string[] {
  return [
    '--format=raw',
    `--cache=${cache}`,
    // Native AIO only works with O_DIRECT; with the page cache the thread pool is the only choice.
    `--aio=${cache === 'none' ? 'native' : 'threads'}`,
    // fio's nbd engine opens a probe connection (to learn the size) and closes it before the
    // job connects: without --persistent qemu-nbd would exit after the probe, and --shared=2
    // lets the job connect even if the probe's teardown is still in progress.
    '--persistent',
    '--shared=2',
    `--socket=${socketPath}`,
    `--export-name=${exportName}`,
    file,
  ];
}

async function startPerFile(spec: SystemSpec, create: boolean): Promise<RunningSystem> {
  mkdirSync(spec.dir, { recursive: true });
  const servers: Server[] = [];
  const uris = new Map<string, string>();
  try {
    for (const vm of spec.vms) {
      const file = join(spec.dir, `${vm}.raw`);
      const sock = checkSocketPath(join(spec.dir, `${vm}.sock`));
      if (create) createSparseFile(file, spec.volumeSizeBytes);
      const args = qemuNbdArgs(sock, vm, file, spec.perFileCache);
      servers.push(spawnServer(`qemu-nbd ${vm}`, 'qemu-nbd', args, join(spec.dir, `${vm}.log`)));
      uris.set(vm, nbdUri(vm, sock));
    }
    await Promise.all(servers.map((s, i) => waitForSockets(s, [join(spec.dir, `${spec.vms[i] ?? ''}.sock`)])));
  } catch (error) {
    await stopAll(servers);
    throw error;
  }
  return {
    kind: 'perfile',
    uris,
    pids: () => pidsOf(servers),
    engineStats: () => Promise.resolve(undefined),
    stop: () => stopAll(servers),
  };
}

// --- nbdkit ----------------------------------------------------------------------------------------

/** nbdkit arguments; exported for the README and tests. */
export function nbdkitArgs(socketPath: string, filesDir: string): string[] {
  return [
    `--unix=${socketPath}`,
    '--foreground',
    // If the benchmark itself is killed with SIGKILL, nbdkit does not outlive it.
    '--exit-with-parent',
    // The file plugin's thread model is "parallel"; nbdkit's default of 16 threads per connection
    // is more than iodepth needs. dir= serves every regular file in the directory, the export
    // name being the file name. cache=default: the page cache, a FLUSH is an fdatasync.
    'file',
    `dir=${filesDir}`,
  ];
}

async function startNbdkit(spec: SystemSpec, create: boolean): Promise<RunningSystem> {
  const filesDir = join(spec.dir, 'files');
  mkdirSync(filesDir, { recursive: true });
  if (create) for (const vm of spec.vms) createSparseFile(join(filesDir, vm), spec.volumeSizeBytes);
  const sock = checkSocketPath(join(spec.dir, 'kit.sock'));
  const server = spawnServer('nbdkit', 'nbdkit', nbdkitArgs(sock, filesDir), join(spec.dir, 'nbdkit.log'));
  try {
    await waitForSockets(server, [sock]);
  } catch (error) {
    await stopServer(server);
    throw error;
  }
  return {
    kind: 'nbdkit',
    uris: new Map(spec.vms.map((vm) => [vm, nbdUri(vm, sock)])),
    pids: () => pidsOf([server]),
    engineStats: () => Promise.resolve(undefined),
    stop: () => stopServer(server),
  };
}

/**
 * Starts a system. With create=true its disks are made first (files) or after start-up (engine
 * volumes); with create=false it serves the disks a previous start created (restart).
 */
export function startSystem(spec: SystemSpec, create: boolean): Promise<RunningSystem> {
  switch (spec.kind) {
    case 'engine':
      return startEngine(spec, create);
    case 'perfile':
      return startPerFile(spec, create);
    case 'nbdkit':
      return startNbdkit(spec, create);
    default: {
      const never: never = spec.kind;
      throw new Error(`unknown system ${String(never)}`);
    }
  }
}
