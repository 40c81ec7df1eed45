/** Identity conformance against a real engine daemon: who we are, what we can do, readiness. */
import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IdentityService, supportsOnlineExpansion } from './identity.ts';
import { startCsiHarness, type CsiHarness } from './testing/harness.ts';

let h: CsiHarness;

beforeEach(async () => {
  h = await startCsiHarness({ engine: 'real' });
});

afterEach(async () => {
  await h.close();
});

describe('Identity', () => {
  it('GetPluginInfo names the driver and the package version', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(await h.identity('GetPluginInfo')).toEqual({ name: 'csi.braid.dev', vendorVersion: pkg.version, manifest: {} });
  });

  it('GetPluginCapabilities without a node service: controller service, topology constraints, offline expansion', async () => {
    const res = await h.identity('GetPluginCapabilities');
    expect(res.capabilities).toEqual([
      { type: 'service', service: { type: 'CONTROLLER_SERVICE' } },
      { type: 'service', service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
      { type: 'volumeExpansion', volumeExpansion: { type: 'OFFLINE' } },
    ]);
  });

  it('Probe is ready while the engine answers, and not ready (but not failing) once it stops', async () => {
    expect(await h.identity('Probe')).toEqual({ ready: { value: true } });
    await h.daemon?.close();
    expect(await h.identity('Probe')).toEqual({ ready: { value: false } });
    expect(h.logger.entries.some((e) => e.msg === 'probe: not ready' && e.level === 'warn')).toBe(true);
  });
});

describe('volume expansion capability', () => {
  const probe = async (): Promise<void> => undefined;
  const expansionOf = async (identity: IdentityService): Promise<unknown> =>
    (await identity.getPluginCapabilities()).capabilities.find((c) => 'volumeExpansion' in c);

  it('is ONLINE exactly when the node service grows devices in use (braid-fuse), OFFLINE otherwise', async () => {
    expect(await expansionOf(new IdentityService({ probe, onlineExpansion: true }))).toEqual({ volumeExpansion: { type: 'ONLINE' } });
    expect(await expansionOf(new IdentityService({ probe, onlineExpansion: false }))).toEqual({ volumeExpansion: { type: 'OFFLINE' } });
    expect(await expansionOf(new IdentityService({ probe }))).toEqual({ volumeExpansion: { type: 'OFFLINE' } });
  });

  it('reads what the node service says, and treats no node service as offline', () => {
    expect(supportsOnlineExpansion({ onlineExpansion: true })).toBe(true);
    expect(supportsOnlineExpansion({ onlineExpansion: false })).toBe(false);
    expect(supportsOnlineExpansion({})).toBe(false);
    expect(supportsOnlineExpansion(undefined)).toBe(false);
  });
});
