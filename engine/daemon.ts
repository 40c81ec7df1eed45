/**
 * The engine process in one call: open the pool in DIR, serve it over NBD (DIR/nbd.sock) and
 * the engine API (DIR/engine.sock). `braid serve` is a thin shell around this; tests and the
 * embedded mode can run it in-process.
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
import { NbdServer } from './nbd/server.ts';
import { Pool } from './pool.ts';

export interface EngineDaemonOptions {
  /** The pool directory; created (mode 0700) if missing. */
  dir: string;
  logger: Logger;
  /** Pool capacity; the pool's own default when absent. */
  capacityBytes?: number;
  /** Mode of both sockets; 0600 by default. */
  socketMode?: number;
}

export interface EngineDaemon {
  pool: Pool;
  /** Absolute paths of the sockets. */
  nbdSocketPath: string;
  engineSocketPath: string;
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
  const socketMode = opts.socketMode ?? DEFAULT_SOCKET_MODE;
  const logger = opts.logger;
  const { nbdSocketPath, engineSocketPath } = poolSockets(dir);
  const started: Step[] = [];

  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const poolOptions = { dir, logger: logger.child({ component: 'pool' }) };
    const pool = await Pool.open(opts.capacityBytes === undefined ? poolOptions : { ...poolOptions, capacityBytes: opts.capacityBytes });
    started.push({ name: 'pool', close: () => pool.close() });

    const nbd = new NbdServer({ exports: pool, logger: logger.child({ component: 'nbd' }) });
    await nbd.listen(nbdSocketPath, socketMode);
    started.push({ name: 'nbd', close: () => nbd.close() });

    const api = new EngineApiServer({ manager: pool, logger: logger.child({ component: 'api' }) });
    await api.listen(engineSocketPath, socketMode);
    started.push({ name: 'api', close: () => api.close() });

    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => (closing ??= closeInReverse(started, logger));
    return { pool, nbdSocketPath, engineSocketPath, close };
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
