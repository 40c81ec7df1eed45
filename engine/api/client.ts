/**
 * The engine API client: what the CLI (and later the CSI driver) uses to reach a running engine
 * over its unix socket. It returns the engine's plain objects (VolumeInfo, SnapshotInfo,
 * PoolStats, sizes as exact numbers) and rejects with the same EngineError codes the engine threw, so callers
 * handle errors exactly as if they called a VolumeManager in-process.
 *
 * Error contract of every method:
 * - EngineError with the engine's code (status.ts maps it back from the gRPC status);
 * - EngineNotRunningError (an EngineError, code FAILED_PRECONDITION) when nothing listens on the
 *   socket: no file, or a stale file whose listener is gone;
 * - EngineApiError for statuses that carry no engine meaning (deadline, internal bug, ...);
 * - WireFormatError when the engine sent a number this client cannot represent exactly.
 */
import { access, constants } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import { EngineError } from '../errors.ts';
import type { CreateVolumeOptions, PoolStats, SnapshotInfo, VolumeInfo } from '../volume-manager.ts';
import {
  engineMethod,
  fromWireSnapshot,
  fromWireStats,
  fromWireVolume,
  type CloneVolumeRequest,
  type CreateSnapshotRequest,
  type CreateVolumeRequest,
  type DeleteSnapshotRequest,
  type DeleteSnapshotResponse,
  type DeleteVolumeRequest,
  type DeleteVolumeResponse,
  type EngineMethodName,
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
  type WireInt64,
} from './proto.ts';
import { errnoCode } from '../socket-path.ts';
import { fromServiceError } from './status.ts';

/** Long enough for any management call on a busy pool; short enough that a hung engine shows. */
export const DEFAULT_CALL_TIMEOUT_MS = 60_000;

export interface EngineClientOptions {
  /** Deadline of each call. */
  callTimeoutMs?: number;
}

/** Nothing listens on the engine socket. The CLI turns this into "start it with braid serve". */
export class EngineNotRunningError extends EngineError {
  readonly socketPath: string;

  constructor(socketPath: string, options?: { cause?: unknown }) {
    super('FAILED_PRECONDITION', `no engine running at ${socketPath}`, options);
    this.name = 'EngineNotRunningError';
    this.socketPath = socketPath;
  }
}

export class EngineClient {
  readonly socketPath: string;
  readonly #client: grpc.Client;
  readonly #callTimeoutMs: number;

  private constructor(socketPath: string, opts: EngineClientOptions) {
    this.socketPath = socketPath;
    this.#callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.#client = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure());
  }

  /** Connects lazily: a missing engine shows up as EngineNotRunningError on the first call. */
  static connect(socketPath: string, opts: EngineClientOptions = {}): EngineClient {
    return new EngineClient(socketPath, opts);
  }

  async createVolume(name: string, sizeBytes: number, opts: CreateVolumeOptions = {}): Promise<VolumeInfo> {
    const req: CreateVolumeRequest = { name, sizeBytes: sizeArgument(sizeBytes), dedup: opts.dedup ?? false, dedupDomain: opts.dedupDomain ?? '' };
    return fromWireVolume((await this.#call<VolumeResponse>('CreateVolume', req)).volume);
  }

  async deleteVolume(name: string): Promise<void> {
    const req: DeleteVolumeRequest = { name };
    await this.#call<DeleteVolumeResponse>('DeleteVolume', req);
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    const req: ResizeVolumeRequest = { name, sizeBytes: sizeArgument(sizeBytes) };
    return fromWireVolume((await this.#call<VolumeResponse>('ResizeVolume', req)).volume);
  }

  async getVolume(name: string): Promise<VolumeInfo> {
    const req: GetVolumeRequest = { name };
    return fromWireVolume((await this.#call<VolumeResponse>('GetVolume', req)).volume);
  }

  async listVolumes(): Promise<VolumeInfo[]> {
    const req: ListVolumesRequest = {};
    return (await this.#call<ListVolumesResponse>('ListVolumes', req)).volumes.map(fromWireVolume);
  }

  async stats(): Promise<PoolStats> {
    const req: GetStatsRequest = {};
    return fromWireStats(await this.#call<GetStatsResponse>('GetStats', req));
  }

  /** A new volume with the content of `source` (a volume or a snapshot); without sizeBytes, the source's size. */
  async cloneVolume(source: string, name: string, sizeBytes?: number): Promise<VolumeInfo> {
    // On the wire 0 means "the source's size", so an explicit 0 must not travel as one.
    if (sizeBytes === 0) throw new EngineError('INVALID_ARGUMENT', 'invalid size 0: must be a positive number of bytes');
    const req: CloneVolumeRequest = { source, name, sizeBytes: sizeBytes === undefined ? '0' : sizeArgument(sizeBytes) };
    return fromWireVolume((await this.#call<VolumeResponse>('CloneVolume', req)).volume);
  }

  async createSnapshot(volume: string, name: string): Promise<SnapshotInfo> {
    const req: CreateSnapshotRequest = { volume, name };
    return fromWireSnapshot((await this.#call<SnapshotResponse>('CreateSnapshot', req)).snapshot);
  }

  async deleteSnapshot(name: string): Promise<void> {
    const req: DeleteSnapshotRequest = { name };
    await this.#call<DeleteSnapshotResponse>('DeleteSnapshot', req);
  }

  async getSnapshot(name: string): Promise<SnapshotInfo> {
    const req: GetSnapshotRequest = { name };
    return fromWireSnapshot((await this.#call<SnapshotResponse>('GetSnapshot', req)).snapshot);
  }

  async listSnapshots(): Promise<SnapshotInfo[]> {
    const req: ListSnapshotsRequest = {};
    return (await this.#call<ListSnapshotsResponse>('ListSnapshots', req)).snapshots.map(fromWireSnapshot);
  }

  /** Closes the channel; calls in flight fail with CANCELLED. */
  close(): void {
    this.#client.close();
  }

  #call<Res>(name: EngineMethodName, request: object): Promise<Res> {
    const method = engineMethod(name);
    const options: grpc.CallOptions = { deadline: Date.now() + this.#callTimeoutMs };
    return new Promise<Res>((resolve, reject) => {
      this.#client.makeUnaryRequest<object, object>(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        request,
        new grpc.Metadata(),
        options,
        (err, response) => {
          if (err) this.#failure(err).then(reject, reject);
          else resolve(response as Res);
        },
      );
    });
  }

  /** The error for a failed call. UNAVAILABLE means we never reached an engine: say why. */
  async #failure(err: grpc.ServiceError): Promise<Error> {
    if (err.code !== grpc.status.UNAVAILABLE) return fromServiceError(err);
    try {
      await access(this.socketPath, constants.R_OK | constants.W_OK);
    } catch (accessErr) {
      if (errnoCode(accessErr) === 'EACCES') {
        return new EngineError('FAILED_PRECONDITION', `cannot connect to the engine at ${this.socketPath}: permission denied`, {
          cause: err,
        });
      }
    }
    return new EngineNotRunningError(this.socketPath, { cause: err });
  }
}

/** Sizes leave the client only as exact integers; a caller bug must not become a rounded size. */
function sizeArgument(sizeBytes: number): WireInt64 {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) {
    throw new EngineError('INVALID_ARGUMENT', `invalid size ${sizeBytes}: must be a whole number of bytes`);
  }
  return String(sizeBytes);
}
