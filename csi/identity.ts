/**
 * The CSI Identity service: who we are, what we can do, and whether we are ready.
 *
 * Capabilities: CONTROLLER_SERVICE, topology constraints (a volume lives on one node's engine),
 * and volume expansion, ONLINE when the node's attacher grows a device in use (braid-fuse, the
 * default without kernel NBD), OFFLINE otherwise (kernel NBD and nbdfuse learn the size only
 * when they connect, so a device grows only when it is not in use). The engine grows a volume
 * at any time either way.
 *
 * The spec wants the same capabilities from every instance of a version. In local mode one
 * process serves everything, so the node's attacher decides; an instance without a node service
 * says OFFLINE, which is always safe (the CO then unpublishes before expanding).
 */
import { readFileSync } from 'node:fs';
import type { CallContext } from './server.ts';
import type {
  GetPluginCapabilitiesResponse,
  GetPluginInfoResponse,
  ProbeResponse,
} from './messages.ts';

export const DRIVER_NAME = 'csi.braid.dev';

/** The version of the package, read once: it is what `vendor_version` reports. */
export const DRIVER_VERSION: string = readPackageVersion();

export interface IdentityOptions {
  /** Resolves when the plugin can serve (its engine answers); rejects with the reason if not. */
  probe(): Promise<void>;
  /** Advertise ONLINE expansion (the node grows devices in use); OFFLINE when absent or false. */
  onlineExpansion?: boolean;
}

/** Whether a node service (csi/node.ts) says it grows volumes in use; false for none. */
export function supportsOnlineExpansion(node: object | undefined): boolean {
  return (node as { onlineExpansion?: unknown } | undefined)?.onlineExpansion === true;
}

export class IdentityService {
  readonly #probe: () => Promise<void>;
  readonly #expansion: 'ONLINE' | 'OFFLINE';

  constructor(opts: IdentityOptions) {
    this.#probe = opts.probe;
    this.#expansion = opts.onlineExpansion === true ? 'ONLINE' : 'OFFLINE';
  }

  async getPluginInfo(): Promise<GetPluginInfoResponse> {
    return { name: DRIVER_NAME, vendorVersion: DRIVER_VERSION };
  }

  async getPluginCapabilities(): Promise<GetPluginCapabilitiesResponse> {
    return {
      capabilities: [
        { service: { type: 'CONTROLLER_SERVICE' } },
        { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
        { volumeExpansion: { type: this.#expansion } },
      ],
    };
  }

  /**
   * Ready when the engine answers. An engine that does not (not started yet, restarting) is
   * "not ready" rather than an error: the plugin itself is healthy and needs no restart.
   */
  async probe(_request: unknown, context: CallContext): Promise<ProbeResponse> {
    try {
      await this.#probe();
      return { ready: { value: true } };
    } catch (err) {
      context.logger.warn({ reason: err instanceof Error ? err.message : String(err) }, 'probe: not ready');
      return { ready: { value: false } };
    }
  }
}

function readPackageVersion(): string {
  const text = readFileSync(new URL('../package.json', import.meta.url), 'utf8');
  const version: unknown = (JSON.parse(text) as { version?: unknown }).version;
  if (typeof version !== 'string' || version === '') throw new Error('package.json has no version');
  return version;
}
