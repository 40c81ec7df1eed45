/**
 * The engine API server: the Engine gRPC service (engine.proto) on a unix socket, backed by a
 * VolumeManager. Every handler goes through one wrapper (`unary`) that logs the call, times it
 * and maps errors to gRPC status through status.ts; handlers themselves only convert between
 * wire messages and the manager's plain objects.
 *
 * The socket is the only access control: it is created inside the pool directory (mode 0700)
 * and chmod-ed to `mode` (default 0600) right after bind. A socket file left behind by a crash
 * is removed before binding, but only after checking that nothing answers on it, so a second
 * server cannot steal a live one's socket.
 */
import { chmod } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { EngineError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { VolumeManager } from '../volume-manager.ts';
import {
  engineService,
  toSafeInteger,
  toWireSnapshot,
  toWireStats,
  toWireVolume,
  type CloneVolumeRequest,
  type CreateSnapshotRequest,
  type CreateVolumeRequest,
  type DeleteSnapshotRequest,
  type DeleteSnapshotResponse,
  type DeleteVolumeRequest,
  type DeleteVolumeResponse,
  type GetSnapshotRequest,
  type GetStatsRequest,
  type GetStatsResponse,
  type GetVolumeRequest,
  type ListSnapshotsRequest,
  type ListSnapshotsResponse,
  type ListVolumesRequest,
  type ListVolumesResponse,
  type ResizeVolumeRequest,
  type SnapshotResponse,
  type VolumeResponse,
} from './proto.ts';
import { prepareSocketPath } from '../socket-path.ts';
import { toStatusError } from './status.ts';

export const DEFAULT_SOCKET_MODE = 0o600;

/** How long close() lets in-flight calls finish before cancelling them. */
const SHUTDOWN_GRACE_MS = 5_000;

export interface EngineApiServerOptions {
  manager: VolumeManager;
  logger: Logger;
}

export class EngineApiServer {
  readonly #manager: VolumeManager;
  readonly #logger: Logger;
  #server: grpc.Server | undefined;
  #socketPath: string | undefined;

  constructor(opts: EngineApiServerOptions) {
    this.#manager = opts.manager;
    this.#logger = opts.logger;
  }

  /** The socket path while listening. */
  get socketPath(): string | undefined {
    return this.#socketPath;
  }

  async listen(socketPath: string, mode: number = DEFAULT_SOCKET_MODE): Promise<void> {
    if (this.#server !== undefined) throw new Error('EngineApiServer is already listening');
    await prepareSocketPath(socketPath);
    const server = new grpc.Server();
    server.addService(engineService, this.#handlers());
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => {
        if (err) {
          server.forceShutdown();
          reject(new EngineError('FAILED_PRECONDITION', `cannot listen on ${socketPath}: ${err.message}`, { cause: err }));
        } else {
          resolve();
        }
      });
    });
    try {
      await chmod(socketPath, mode);
    } catch (err) {
      server.forceShutdown();
      throw err;
    }
    this.#server = server;
    this.#socketPath = socketPath;
    this.#logger.info({ socket: socketPath, mode: `0${mode.toString(8)}` }, 'engine API listening');
  }

  /**
   * Stops accepting calls, lets in-flight ones finish (up to SHUTDOWN_GRACE_MS), then cancels
   * the rest. grpc-js removes the socket file when it closes the listener. Idempotent.
   */
  async close(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#logger.warn({ graceMs: SHUTDOWN_GRACE_MS }, 'engine API calls still running at shutdown: cancelling them');
        server.forceShutdown();
        resolve();
      }, SHUTDOWN_GRACE_MS);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.#logger.info({ socket: this.#socketPath }, 'engine API closed');
    this.#socketPath = undefined;
  }

  #handlers(): grpc.UntypedServiceImplementation {
    const m = this.#manager;
    return {
      CreateVolume: this.#unary('CreateVolume', async (req: CreateVolumeRequest): Promise<VolumeResponse> => {
        const volume = await m.createVolume(req.name, requestSize(req.sizeBytes), { dedup: req.dedup, ...(req.dedupDomain ? { dedupDomain: req.dedupDomain } : {}) });
        return { volume: toWireVolume(volume) };
      }),
      DeleteVolume: this.#unary('DeleteVolume', async (req: DeleteVolumeRequest): Promise<DeleteVolumeResponse> => {
        await m.deleteVolume(req.name);
        return {};
      }),
      ResizeVolume: this.#unary('ResizeVolume', async (req: ResizeVolumeRequest): Promise<VolumeResponse> => {
        const volume = await m.resizeVolume(req.name, requestSize(req.sizeBytes));
        return { volume: toWireVolume(volume) };
      }),
      GetVolume: this.#unary('GetVolume', async (req: GetVolumeRequest): Promise<VolumeResponse> => {
        return { volume: toWireVolume(m.getVolume(req.name)) };
      }),
      ListVolumes: this.#unary('ListVolumes', async (_req: ListVolumesRequest): Promise<ListVolumesResponse> => {
        return { volumes: byName(m.listVolumes()).map(toWireVolume) };
      }),
      GetStats: this.#unary('GetStats', async (_req: GetStatsRequest): Promise<GetStatsResponse> => {
        return toWireStats(m.stats());
      }),
      CloneVolume: this.#unary('CloneVolume', async (req: CloneVolumeRequest): Promise<VolumeResponse> => {
        // 0, the proto3 default, is "the source's size": no volume has size 0.
        const sizeBytes = requestSize(req.sizeBytes);
        const volume = await m.cloneVolume(req.source, req.name, sizeBytes === 0 ? undefined : sizeBytes);
        return { volume: toWireVolume(volume) };
      }),
      CreateSnapshot: this.#unary('CreateSnapshot', async (req: CreateSnapshotRequest): Promise<SnapshotResponse> => {
        return { snapshot: toWireSnapshot(await m.createSnapshot(req.volume, req.name)) };
      }),
      DeleteSnapshot: this.#unary('DeleteSnapshot', async (req: DeleteSnapshotRequest): Promise<DeleteSnapshotResponse> => {
        await m.deleteSnapshot(req.name);
        return {};
      }),
      GetSnapshot: this.#unary('GetSnapshot', async (req: GetSnapshotRequest): Promise<SnapshotResponse> => {
        return { snapshot: toWireSnapshot(m.getSnapshot(req.name)) };
      }),
      ListSnapshots: this.#unary('ListSnapshots', async (_req: ListSnapshotsRequest): Promise<ListSnapshotsResponse> => {
        return { snapshots: byName(m.listSnapshots()).map(toWireSnapshot) };
      }),
    };
  }

  /** The one wrapper of every handler: debug log in and out, errors mapped through status.ts. */
  #unary<Req, Res>(rpc: string, handle: (req: Req) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
    return (call, callback) => {
      const startedMs = performance.now();
      this.#logger.debug({ rpc, request: call.request }, 'engine API call');
      handle(call.request).then(
        (response) => {
          this.#logger.debug({ rpc, durationMs: elapsedMs(startedMs) }, 'engine API call done');
          callback(null, response);
        },
        (err: unknown) => {
          const { error, internal } = toStatusError(err);
          if (internal) {
            this.#logger.error({ rpc, err, request: call.request }, 'engine API call failed unexpectedly');
          } else {
            const code = err instanceof EngineError ? err.code : undefined;
            this.#logger.debug({ rpc, code, message: error.message, durationMs: elapsedMs(startedMs) }, 'engine API call refused');
          }
          callback(error);
        },
      );
    };
  }
}

/** A size from a request: the proto says uint64, the engine takes only safe integers. */
function requestSize(value: string): number {
  const n = toSafeInteger(value);
  if (n === undefined) throw new EngineError('INVALID_ARGUMENT', `invalid size ${value}: too large`);
  return n;
}

/** Sorted by name in code-unit order (names are ASCII), whatever order the manager used. */
function byName<T extends { name: string }>(items: T[]): T[] {
  return items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function elapsedMs(startedMs: number): number {
  return Math.round((performance.now() - startedMs) * 1000) / 1000;
}
