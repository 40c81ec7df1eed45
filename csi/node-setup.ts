/**
 * The Node service on the real machine in one call: chooses the attacher once (kernel NBD when
 * the machine has it, braid-fuse + loop otherwise; BRAID_ATTACHER forces one, csi/attach/select.ts)
 * and wires it with the mount helpers. `braid serve` and the integration tests use this.
 */
import { resolve } from 'node:path';
import type { Logger } from '../engine/logger.ts';
import type { AttacherChoice } from './attach/select.ts';
import { selectAttacher } from './attach/select.ts';
import { NodeService } from './node.ts';
import { systemNodeSystem } from './node-system.ts';

/** The node state directory inside a pool directory: DIR/node. */
export const NODE_STATE_DIR_NAME = 'node';

export interface NodeSetupOptions {
  nodeId: string;
  /** Stage records and attach state; must survive plugin restarts (a hostPath in Kubernetes). */
  stateDir: string;
  logger: Logger;
  /** The NBD socket of this node's engine, for volume contexts that name none. */
  defaultNbdSocketPath?: string;
  /** Overrides BRAID_ATTACHER. */
  attacher?: AttacherChoice;
  env?: Readonly<Record<string, string | undefined>>;
  maxVolumesPerNode?: number;
}

export async function createNodeService(opts: NodeSetupOptions): Promise<NodeService> {
  const logger = opts.logger.child({ component: 'csi-node' });
  const attacher = await selectAttacher({
    logger,
    ...(opts.attacher === undefined ? {} : { choice: opts.attacher }),
    ...(opts.env === undefined ? {} : { env: opts.env }),
  });
  return new NodeService({
    nodeId: opts.nodeId,
    stateDir: resolve(opts.stateDir),
    system: systemNodeSystem(attacher),
    ...(opts.defaultNbdSocketPath === undefined ? {} : { defaultNbdSocketPath: resolve(opts.defaultNbdSocketPath) }),
    ...(opts.maxVolumesPerNode === undefined ? {} : { maxVolumesPerNode: opts.maxVolumesPerNode }),
  });
}
