/**
 * The CSI Identity service: who we are, what we can do, and whether we are ready.
 *
 * Capabilities are the same for every instance of a version (the spec requires it), whether the
 * instance serves the controller, the node, or both: CONTROLLER_SERVICE, topology constraints
 * (a volume lives on one node's engine) and OFFLINE expansion: the engine grows a volume at
 * any time, but today's attachers (nbdfuse + loop, kernel NBD) learn the size only when they
 * connect, so a node can grow a device only when it is not in use.
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
}

export class IdentityService {
  readonly #probe: () => Promise<void>;

  constructor(opts: IdentityOptions) {
    this.#probe = opts.probe;
  }

  async getPluginInfo(): Promise<GetPluginInfoResponse> {
    return { name: DRIVER_NAME, vendorVersion: DRIVER_VERSION };
  }

  async getPluginCapabilities(): Promise<GetPluginCapabilitiesResponse> {
    return {
      capabilities: [
        { service: { type: 'CONTROLLER_SERVICE' } },
        { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
        { volumeExpansion: { type: 'OFFLINE' } },
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
