/**
 * The CSI gRPC server: Identity, and optionally Controller and Node, on one unix socket.
 *
 * Every RPC of every service goes through one wrapper (`unaryHandler`), which is the only place
 * that logs calls (method, duration, status, the request with secrets redacted) and the only
 * place that turns errors into statuses (csi/status.ts). Services are plain objects or class
 * instances whose methods are named like the RPCs in lowerCamelCase (`createVolume`); an RPC
 * whose method is missing answers UNIMPLEMENTED through the same wrapper, so
 * ControllerPublishVolume and friends need no code at all.
 */
import { chmod } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../engine/logger.ts';
import { csiService } from './proto.ts';
import type { CsiServiceName } from './proto.ts';
import { redact } from './redact.ts';
import { prepareSocketPath, socketPathOf } from './socket.ts';
import { CsiError, statusName, toCsiStatus } from './status.ts';

/** What a handler gets besides the request. */
export interface CallContext {
  /** The RPC, as the spec names it (CreateVolume). */
  method: string;
  logger: Logger;
}

/** One RPC. `request: never` lets a handler declare its own request type. */
export type CsiHandler = (request: never, context: CallContext) => Promise<object>;

/** A service: RPC methods in lowerCamelCase, any of them may be missing (UNIMPLEMENTED). */
export type CsiServiceImpl = object;

export interface CsiServerOptions {
  /** `unix:///abs/path`, `unix:/abs/path`, or a plain path. */
  endpoint: string;
  identity: CsiServiceImpl;
  controller?: CsiServiceImpl;
  node?: CsiServiceImpl;
  logger: Logger;
  /** Mode of the socket file; 0600 by default (kubelet and the sidecars run as root). */
  socketMode?: number;
}

export interface CsiServer {
  socketPath: string;
  /** Stops accepting calls, lets running ones finish (bounded), removes the socket. Idempotent. */
  close(): Promise<void>;
}

export const DEFAULT_CSI_SOCKET_MODE = 0o600;

/** How long close() lets in-flight calls finish before cancelling them. */
const SHUTDOWN_GRACE_MS = 5_000;

/** Polled constantly by the CO and the livenessprobe sidecar: logged at debug, not info. */
const QUIET_METHODS: ReadonlySet<string> = new Set([
  'Probe',
  'GetPluginInfo',
  'GetPluginCapabilities',
  'ControllerGetCapabilities',
  'NodeGetCapabilities',
  'NodeGetInfo',
]);

export async function startCsiServer(opts: CsiServerOptions): Promise<CsiServer> {
  const socketPath = socketPathOf(opts.endpoint);
  const logger = opts.logger;
  await prepareSocketPath(socketPath);
  const server = new grpc.Server();
  const services: [CsiServiceName, CsiServiceImpl | undefined][] = [
    ['Identity', opts.identity],
    ['Controller', opts.controller],
    ['Node', opts.node],
  ];
  for (const [name, impl] of services) {
    if (impl !== undefined) server.addService(csiService(name), serviceHandlers(name, impl, logger));
  }
  await bind(server, socketPath);
  try {
    await chmod(socketPath, opts.socketMode ?? DEFAULT_CSI_SOCKET_MODE);
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  const served = services.filter(([, impl]) => impl !== undefined).map(([name]) => name);
  logger.info({ socket: socketPath, services: served }, 'CSI server listening');
  let closing: Promise<void> | undefined;
  return { socketPath, close: () => (closing ??= shutdown(server, socketPath, logger)) };
}

function bind(server: grpc.Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (!err) return resolve();
      server.forceShutdown();
      reject(new CsiError(grpc.status.FAILED_PRECONDITION, `cannot listen on ${socketPath}: ${err.message}`, { cause: err }));
    });
  });
}

async function shutdown(server: grpc.Server, socketPath: string, logger: Logger): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      logger.warn({ graceMs: SHUTDOWN_GRACE_MS }, 'CSI calls still running at shutdown: cancelling them');
      server.forceShutdown();
      resolve();
    }, SHUTDOWN_GRACE_MS);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  logger.info({ socket: socketPath }, 'CSI server closed');
}

/** A grpc-js handler for every RPC of the service, implemented or not. */
function serviceHandlers(name: CsiServiceName, impl: CsiServiceImpl, logger: Logger): grpc.UntypedServiceImplementation {
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const [method, definition] of Object.entries(csiService(name))) {
    const handler = methodOf(impl, definition.originalName ?? method);
    handlers[method] = unaryHandler(method, handler, logger.child({ service: name }));
  }
  return handlers;
}

/** The method of `impl` for an RPC, bound to it; undefined when the service lacks it. */
function methodOf(impl: CsiServiceImpl, name: string): CsiHandler | undefined {
  const fn: unknown = (impl as Record<string, unknown>)[name];
  return typeof fn === 'function' ? (fn.bind(impl) as CsiHandler) : undefined;
}

/** The one wrapper around every CSI handler: timing, logging, error mapping. */
function unaryHandler(method: string, handler: CsiHandler | undefined, logger: Logger): grpc.handleUnaryCall<object, object> {
  return (call, callback) => {
    const startedMs = performance.now();
    const context: CallContext = { method, logger: logger.child({ method }) };
    run(handler, method, call.request, context).then(
      (response) => {
        const entry = { method, durationMs: elapsedMs(startedMs), code: 'OK', request: redact(call.request) };
        if (QUIET_METHODS.has(method)) logger.debug(entry, 'CSI call');
        else logger.info(entry, 'CSI call');
        callback(null, response);
      },
      (err: unknown) => {
        const { error, internal } = toCsiStatus(err);
        const entry = { method, durationMs: elapsedMs(startedMs), code: statusName(error.code), message: error.message, request: redact(call.request) };
        if (internal) logger.error({ ...entry, err }, 'CSI call failed unexpectedly');
        else logger.warn(entry, 'CSI call refused');
        callback(error);
      },
    );
  };
}

/** Calls the handler so that a synchronous throw becomes a rejection like any other. */
async function run(handler: CsiHandler | undefined, method: string, request: object, context: CallContext): Promise<object> {
  if (handler === undefined) throw new CsiError(grpc.status.UNIMPLEMENTED, `${method} is not implemented by this plugin`);
  return handler(request as never, context);
}

function elapsedMs(startedMs: number): number {
  return Math.round((performance.now() - startedMs) * 1000) / 1000;
}
