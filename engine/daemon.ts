/**
 * The engine process in one call: open the pool in DIR, serve it over NBD (DIR/nbd.sock, and
 * TCP with TLS when asked) and the engine API (DIR/engine.sock). `braid serve` is a thin shell
 * around this; tests and the embedded mode can run it in-process.
 *
 * Order matters both ways. Start: pool (takes the pool lock, so a second daemon on DIR fails
 * here, before it touches any socket), then NBD, then the API last, so that once engine.sock
 * answers, every volume it creates is already reachable over NBD. Close: the reverse: the API
 * stops taking requests, NBD stops accepting and closes its connections (their handles are
 * released), and the pool closes last, writing its checkpoint. A failed start undoes the steps
 * that succeeded, in the same reverse order.
 */
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { EngineApiServer, DEFAULT_SOCKET_MODE } from './api/server.ts';
import { poolSockets } from './socket-path.ts';
import { EngineError } from './errors.ts';
import type { Logger } from './logger.ts';
import { EngineMetrics } from './metrics.ts';
import { MetricsServer } from './metrics-server.ts';
import { NbdServer } from './nbd/server.ts';
import type { NbdLimits } from './nbd/server.ts';
import { NbdTcpListener } from './nbd/tcp-listener.ts';
import { TlsAcceptor } from './nbd/tls-acceptor.ts';
import type { TlsCredentials } from './nbd/tls-credentials.ts';
import { Pool } from './pool.ts';
import { applySocketAccess, shareDirectoryWithGroup, withPrivateUmask } from './socket-access.ts';

export interface EngineDaemonOptions {
  /** The pool directory; created (mode 0700) if missing. */
  dir: string;
  logger: Logger;
  /** Pool capacity; the pool's own default when absent. */
  capacityBytes?: number;
  /** Shared block cache size; the pool's default when absent. */
  cacheBytes?: number;
  /** Mode of both sockets; 0600 by default. */
  socketMode?: number;
  /** Group of both sockets and of the pool directory (which gets g+x); unchanged when absent. */
  socketGid?: number;
  /** Serve Prometheus metrics over HTTP here (port 0: any free port); none when absent. */
  metrics?: { host: string; port: number };
  /** NBD server limits (connections, write memory, timeouts); the server's defaults when absent. */
  nbd?: NbdLimits;
  /**
   * Also serve NBD on TCP (port 0: any free port), under the same limits. TLS with a client
   * certificate signed by the CA is required; `tls: null` (plain TCP) only for tests.
   */
  nbdTcp?: { host: string; port: number; tls: TlsCredentials | null };
}

export interface EngineDaemon {
  pool: Pool;
  /** Absolute paths of the sockets. */
  nbdSocketPath: string;
  engineSocketPath: string;
  /** HOST:PORT the metrics are served on, when asked for. */
  metricsAddress?: string;
  /** HOST:PORT of the NBD TCP listener, when asked for. */
  nbdTcpAddress?: string;
  /** Stops everything in reverse start order. Idempotent; resolves after the pool is closed. */
  close(): Promise<void>;
}

/** One undo step of a start: a name for the logs and the action. */
interface Step {
  name: string;
  close(): Promise<void>;
}

export async function startEngineDaemon(opts: EngineDaemonOptions): Promise<EngineDaemon> {
  const dir = resolve(opts.dir);
  const logger = opts.logger;
  const { nbdSocketPath, engineSocketPath } = poolSockets(dir);
  const started: Step[] = [];

  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    if (opts.socketGid !== undefined) await shareDirectoryWithGroup(dir, opts.socketGid);
    const poolOptions = { dir, logger: logger.child({ component: 'pool' }), ...(opts.cacheBytes === undefined ? {} : { cacheBytes: opts.cacheBytes }) };
    const pool = await Pool.open(opts.capacityBytes === undefined ? poolOptions : { ...poolOptions, capacityBytes: opts.capacityBytes });
    started.push({ name: 'pool', close: () => pool.close() });

    const nbd = new NbdServer({ ...opts.nbd, exports: pool, logger: logger.child({ component: 'nbd' }) });
    await listenSocket(opts, (mode) => nbd.listen(nbdSocketPath, mode));
    started.push({ name: 'nbd', close: () => nbd.close() });
    await shareSocket(nbdSocketPath, opts);

    let nbdTcpAddress: string | undefined;
    if (opts.nbdTcp !== undefined) {
      const { host, port, tls } = opts.nbdTcp;
      const tcp = await NbdTcpListener.listen({ host, port, nbd, tls: tls === null ? null : new TlsAcceptor(tls), logger: logger.child({ component: 'nbd' }) });
      // Closed before the NbdServer: first stop accepting, then close the connections.
      started.push({ name: 'nbd-tcp', close: () => tcp.close() });
      nbdTcpAddress = tcp.address;
    }

    const api = new EngineApiServer({ manager: pool, logger: logger.child({ component: 'api' }) });
    await listenSocket(opts, (mode) => api.listen(engineSocketPath, mode));
    started.push({ name: 'api', close: () => api.close() });
    await shareSocket(engineSocketPath, opts);

    let metricsAddress: string | undefined;
    if (opts.metrics !== undefined) {
      // Read on scrape from the pool and the NBD server: nothing on the I/O path.
      const metrics = new EngineMetrics({ stats: () => pool.stats(), nbdConnections: () => nbd.connectionCount }, { processMetrics: true });
      const server = new MetricsServer(metrics, logger.child({ component: 'metrics' }));
      metricsAddress = await server.listen(opts.metrics.host, opts.metrics.port);
      started.push({ name: 'metrics', close: () => server.close() });
    }

    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => (closing ??= closeInReverse(started, logger));
    return {
      pool,
      nbdSocketPath,
      engineSocketPath,
      ...(metricsAddress === undefined ? {} : { metricsAddress }),
      ...(nbdTcpAddress === undefined ? {} : { nbdTcpAddress }),
      close,
    };
  } catch (err) {
    // An EngineError is an operating condition (pool locked, socket in use): no stack needed.
    const reason = err instanceof EngineError ? { code: err.code, reason: err.message } : { err };
    const undoing = started.map((step) => step.name).reverse();
    logger.error({ ...reason, dir, undoing }, 'engine failed to start');
    await closeInReverse(started, logger).catch(() => {
      // Already logged step by step; the start error is the one to report.
    });
    throw err;
  }
}

/**
 * Binds a socket born owner-only (socket-access.ts). With a group to share it with, it listens
 * as 0600 and gets its group and final mode in shareSocket(), in that order.
 */
function listenSocket(opts: EngineDaemonOptions, listen: (mode: number) => Promise<void>): Promise<void> {
  const mode = opts.socketGid === undefined ? (opts.socketMode ?? DEFAULT_SOCKET_MODE) : DEFAULT_SOCKET_MODE;
  return withPrivateUmask(() => listen(mode));
}

async function shareSocket(socketPath: string, opts: EngineDaemonOptions): Promise<void> {
  if (opts.socketGid === undefined) return;
  await applySocketAccess(socketPath, { mode: opts.socketMode ?? DEFAULT_SOCKET_MODE, gid: opts.socketGid });
}

/**
 * Closes the steps last-first. A failing step does not stop the others (the pool must still get
 * its checkpoint); the first failure is rethrown once all have run.
 */
async function closeInReverse(steps: readonly Step[], logger: Logger): Promise<void> {
  let firstError: unknown;
  for (const step of [...steps].reverse()) {
    try {
      await step.close();
    } catch (err) {
      logger.error({ err, component: step.name }, `closing ${step.name} failed`);
      firstError ??= err;
    }
  }
  if (firstError !== undefined) throw firstError;
}
