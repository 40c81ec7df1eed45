/**
 * The fuse attacher's decisions that need no devices; test/fuse-attach.test.ts runs it for real.
 */
import { describe, expect, it } from 'vitest';
import { fuseLoopAttachArgs, healthyDevice } from './fuse-attacher.ts';
import type { FuseProbe } from './fuse-attacher.ts';
import { braidFuseArgs } from './fuse-attacher-process.ts';
import { checkSocketPath, fuseLayout, isBraidFuseFor } from './fuse/layout.ts';
import { asState } from './state-file.ts';

const layout = fuseLayout('/s', 'vm1');
const live: FuseProbe = {
  layout,
  state: undefined,
  otherKind: undefined,
  fuseMounted: true,
  pid: 42,
  loops: ['/dev/loop3'],
  status: { pid: 42, exportName: 'vm1', mountDir: layout.mountDir, state: 'connected', sizeBytes: 1, replayBytes: 0, replayEntries: 0, inFlight: 0, queued: 0, reconnects: 0 },
};

describe('healthyDevice', () => {
  it('is the loop device when every piece is live, also while braid-fuse reconnects', () => {
    expect(healthyDevice(live)).toBe('/dev/loop3');
    expect(healthyDevice({ ...live, status: { ...live.status!, state: 'reconnecting' } })).toBe('/dev/loop3');
  });

  it.each([
    ['no FUSE mount', { fuseMounted: false }],
    ['no braid-fuse process', { pid: undefined }],
    ['braid-fuse not answering its control socket', { status: undefined }],
    ['the engine unreachable past the reconnect timeout', { status: { ...live.status!, state: 'failed' as const } }],
    ['no loop device yet', { loops: [] }],
    ['two loop devices on one file', { loops: ['/dev/loop3', '/dev/loop4'] }],
  ] as [string, Partial<FuseProbe>][])('is undefined with %s', (_what, change) => {
    expect(healthyDevice({ ...live, ...change })).toBeUndefined();
  });
});

describe('layout and commands', () => {
  it('puts everything under the state directory, the socket under a short hashed name', () => {
    expect(layout).toMatchObject({ mountDir: '/s/braid-fuse-vm1', backingFile: '/s/braid-fuse-vm1/disk', logFile: '/s/vm1.fuse.log' });
    expect(layout.controlSocket).toMatch(/^\/s\/fuse-[0-9a-f]{16}\.sock$/);
    expect(fuseLayout('/s', 'vm2').controlSocket).not.toBe(layout.controlSocket);
    expect(() => checkSocketPath(fuseLayout(`/${'x'.repeat(90)}`, 'a'.repeat(128)))).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => checkSocketPath(fuseLayout('/var/lib/kubelet/plugins/csi.braid.dev/node/attach', 'a'.repeat(128)))).not.toThrow();
  });

  it('recognises its own braid-fuse by the mount point in its arguments', () => {
    const argv = ['/usr/bin/node', ...braidFuseArgs(layout, '/p/nbd.sock', { reconnectTimeoutMs: 120_000, replayLimitBytes: 64 << 20 })];
    expect(isBraidFuseFor(argv, layout.mountDir)).toBe(true);
    expect(isBraidFuseFor(argv, '/s/braid-fuse-vm2')).toBe(false);
    expect(isBraidFuseFor(['nbdfuse', layout.mountDir], layout.mountDir)).toBe(false);
    expect(argv).toContain('--reconnect-timeout-ms');
  });

  it('binds loop devices with direct I/O and never twice on one file', () => {
    expect(fuseLoopAttachArgs('/s/braid-fuse-vm1/disk')).toEqual(['--show', '--direct-io=on', '--nooverlap', '--find', '/s/braid-fuse-vm1/disk']);
  });

  it('its attach record parses, and a record missing the control socket does not', () => {
    const record = { version: 1, kind: 'fuse', exportName: 'vm1', socketPath: '/p/nbd.sock', mountDir: layout.mountDir, controlSocket: layout.controlSocket, pid: 42, loopDevice: null };
    expect(asState(record)).toEqual(record);
    expect(asState({ ...record, controlSocket: undefined })).toBeUndefined();
  });
});
