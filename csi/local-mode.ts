/**
 * Local mode in one call: the CSI server on DIR/csi.sock (or another endpoint), in front of the
 * engine that serves the pool in DIR (DIR/engine.sock), with the local controller backend.
 * `braid serve` calls this after starting the engine; tests call it too. The node service is
 * optional and supplied by the caller (csi/node-setup.ts builds the real one), so this module
 * does not depend on how volumes are attached; the caller gives it the same node ID, so that
 * the topology CreateVolume reports is the one NodeGetInfo reports.
 */
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { EngineClient } from '../engine/api/client.ts';
import type { Logger } from '../engine/logger.ts';
import { LocalBackend } from './backend/local.ts';
import { ControllerService } from './controller.ts';
import { IdentityService, supportsOnlineExpansion } from './identity.ts';
import { startCsiServer, type CsiServer, type CsiServiceImpl } from './server.ts';

/** The CSI socket's name in the pool directory (CLI.md). */
export const CSI_SOCKET_NAME = 'csi.sock';
export const ENGINE_SOCKET_NAME = 'engine.sock';

export interface LocalCsiOptions {
  /** The pool directory of a running engine. */
  dir: string;
  logger: Logger;
  /** The topology value of this node; the host name by default. */
  nodeId?: string;
  /** The Node service (csi/node-setup.ts); without it the socket serves Identity and Controller only. */
  node?: CsiServiceImpl;
  /** The CSI endpoint (`unix:///path` or a path); DIR/csi.sock by default. */
  endpoint?: string;
  /** Mode of DIR/csi.sock; 0600 by default. */
  socketMode?: number;
}

export interface LocalCsi {
  server: CsiServer;
  backend: LocalBackend;
  /** Stops the CSI server, then lets go of the engine. */
  close(): Promise<void>;
}

export async function startLocalCsi(opts: LocalCsiOptions): Promise<LocalCsi> {
  const dir = resolve(opts.dir);
  const engine = EngineClient.connect(join(dir, ENGINE_SOCKET_NAME));
  const backend = new LocalBackend({ engine, nodeId: opts.nodeId ?? hostname(), poolDir: dir });
  try {
    const server = await startCsiServer({
      endpoint: opts.endpoint ?? join(dir, CSI_SOCKET_NAME),
      identity: new IdentityService({ probe: () => backend.probe(), onlineExpansion: supportsOnlineExpansion(opts.node) }),
      controller: new ControllerService({ backend }),
      logger: opts.logger.child({ component: 'csi' }),
      ...(opts.node === undefined ? {} : { node: opts.node }),
      ...(opts.socketMode === undefined ? {} : { socketMode: opts.socketMode }),
    });
    return {
      server,
      backend,
      async close() {
        await server.close();
        engine.close();
      },
    };
  } catch (err) {
    engine.close();
    throw err;
  }
}
