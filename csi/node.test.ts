/**
 * The Node service's CSI rules against an in-memory machine (node-fakes.ts): validation,
 * idempotency, status codes, state across a restart, offline and online expansion. The same
 * flows on real devices: test/csi-node.test.ts.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../engine/logger.ts';
import { NodeService } from './node.ts';
import { FakeMachine } from './node-fakes.ts';
import type { CallContext } from './server.ts';
import { statusName, toCsiStatus } from './status.ts';
import { TOPOLOGY_KEY } from './topology.ts';
import { CONTEXT_EXPORT_NAME, CONTEXT_NBD_SOCKET } from './volume-context.ts';

const MiB = 2 ** 20;
const SOCKET = '/run/braid/nbd.sock';
const STAGING = '/var/lib/kubelet/staging/pv1';
const TARGET = '/var/lib/kubelet/pods/p1/volumes/pv1';

let stateDir: string;
let machine: FakeMachine;
let node: NodeService;

const ctx: CallContext = { method: 'test', logger: silentLogger };

beforeEach(async () => {
  stateDir = await mkdtemp(join(tmpdir(), 'braid-node-unit-'));
  machine = new FakeMachine();
  machine.exports.set('vol1', 64 * MiB);
  machine.paths.add(STAGING); // the CO creates the staging directory
  node = newNode();
});

afterEach(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

function newNode(): NodeService {
  return new NodeService({ nodeId: 'node-a', stateDir, system: machine.system, defaultNbdSocketPath: SOCKET });
}

// ---- request builders (the shapes proto-loader decodes) -----------------------------------

function blockCap(mode = 'SINGLE_NODE_WRITER'): object {
  return { block: {}, mount: null, accessMode: { mode } };
}

function mountCap(fsType = '', mountFlags: string[] = [], mode = 'SINGLE_NODE_WRITER'): object {
  return { block: null, mount: { fsType, mountFlags, volumeMountGroup: '' }, accessMode: { mode } };
}

const context = { [CONTEXT_EXPORT_NAME]: 'vol1', [CONTEXT_NBD_SOCKET]: SOCKET };

function stageReq(extra: Record<string, unknown> = {}): never {
  return { volumeId: 'vol1', publishContext: {}, stagingTargetPath: STAGING, volumeCapability: mountCap(), secrets: {}, volumeContext: context, ...extra } as never;
}

function publishReq(extra: Record<string, unknown> = {}): never {
  return {
    volumeId: 'vol1',
    publishContext: {},
    stagingTargetPath: STAGING,
    targetPath: TARGET,
    volumeCapability: mountCap(),
    readonly: false,
    secrets: {},
    volumeContext: context,
    ...extra,
  } as never;
}

function statsReq(volumePath: string, volumeId = 'vol1'): never {
  return { volumeId, volumePath, stagingTargetPath: '' } as never;
}

function expandReq(volumePath: string, extra: Record<string, unknown> = {}): never {
  return { volumeId: 'vol1', volumePath, capacityRange: null, stagingTargetPath: '', volumeCapability: null, secrets: {}, ...extra } as never;
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return statusName(toCsiStatus(err).error.code);
  }
  throw new Error('expected the call to fail');
}

async function records(): Promise<string[]> {
  return readdir(join(stateDir, 'volumes')).catch(() => []);
}

// ---- tests --------------------------------------------------------------------------------

describe('NodeGetInfo and NodeGetCapabilities', () => {
  it('reports the node, a volume limit and the topology the controller uses', async () => {
    expect(await node.nodeGetInfo()).toEqual({ nodeId: 'node-a', maxVolumesPerNode: '256', accessibleTopology: { segments: { [TOPOLOGY_KEY]: 'node-a' } } });
  });

  it('reports stage/unstage, stats, expansion and volume condition', async () => {
    const { capabilities } = await node.nodeGetCapabilities();
    expect(capabilities.map((c) => c.rpc.type)).toEqual(['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION']);
  });
});

describe('validation', () => {
  it.each([
    ['stage without volume_id', () => node.nodeStageVolume(stageReq({ volumeId: '' }), ctx)],
    ['stage without staging path', () => node.nodeStageVolume(stageReq({ stagingTargetPath: '' }), ctx)],
    ['stage with a relative staging path', () => node.nodeStageVolume(stageReq({ stagingTargetPath: 'rel/path' }), ctx)],
    ['stage without capability', () => node.nodeStageVolume(stageReq({ volumeCapability: null }), ctx)],
    ['stage with a capability without access mode', () => node.nodeStageVolume(stageReq({ volumeCapability: { block: {} } }), ctx)],
    ['stage with a multi-node mode', () => node.nodeStageVolume(stageReq({ volumeCapability: blockCap('MULTI_NODE_MULTI_WRITER') }), ctx)],
    ['stage with an unsupported filesystem', () => node.nodeStageVolume(stageReq({ volumeCapability: mountCap('btrfs') }), ctx)],
    ['stage with a malformed export name', () => node.nodeStageVolume(stageReq({ volumeContext: { [CONTEXT_EXPORT_NAME]: '../x' } }), ctx)],
    ['publish without target', () => node.nodePublishVolume(publishReq({ targetPath: '' }))],
    ['publish without staging path', () => node.nodePublishVolume(publishReq({ stagingTargetPath: '' }))],
    ['publish without capability', () => node.nodePublishVolume(publishReq({ volumeCapability: null }))],
    ['unpublish without volume_id', () => node.nodeUnpublishVolume({ volumeId: '', targetPath: TARGET })],
    ['unpublish without target', () => node.nodeUnpublishVolume({ volumeId: 'vol1', targetPath: '' })],
    ['unstage without volume_id', () => node.nodeUnstageVolume({ volumeId: '', stagingTargetPath: STAGING }, ctx)],
    ['unstage without staging path', () => node.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: '' }, ctx)],
    ['stats without volume_id', () => node.nodeGetVolumeStats(statsReq(TARGET, ''))],
    ['stats without path', () => node.nodeGetVolumeStats(statsReq(''))],
    ['expand without path', () => node.nodeExpandVolume(expandReq(''), ctx)],
    ['expand with a negative size', () => node.nodeExpandVolume(expandReq(STAGING, { capacityRange: { requiredBytes: '-1', limitBytes: '0' } }), ctx)],
  ])('%s is INVALID_ARGUMENT, and touches nothing', async (_what, call) => {
    expect(await codeOf(call())).toBe('INVALID_ARGUMENT');
    expect(machine.log).toEqual([]);
    expect(machine.attacher.attached.size).toBe(0);
  });
});

describe('NodeStageVolume', () => {
  it('attaches, creates ext4 once and mounts at the staging path; again is a no-op', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    expect(machine.log).toEqual([`mkfs.ext4 /dev/loop0`, `mount /dev/loop0 ${STAGING} ext4 `]);
    await node.nodeStageVolume(stageReq(), ctx);
    expect(machine.log).toHaveLength(2);
    expect(await records()).toEqual(['vol1.json']);
  });

  it('passes mount flags, and mounts xfs with nouuid (clones share the UUID)', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: mountCap('xfs', ['noatime']) }), ctx);
    expect(machine.mounts.get(STAGING)?.options).toEqual(['noatime', 'nouuid']);
  });

  it('stages a block volume without a filesystem or a mount', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    expect(machine.log).toEqual([]);
    expect(machine.attacher.attached.get('vol1')?.devicePath).toBe('/dev/loop0');
    expect(machine.devices.get('/dev/loop0')?.readOnly).toBe(false);
  });

  it('takes the export from the volume ID and the socket from the node when the context has none', async () => {
    await node.nodeStageVolume(stageReq({ volumeContext: {}, volumeCapability: blockCap() }), ctx);
    expect(machine.attacher.attached.has('vol1')).toBe(true);
  });

  it('answers ALREADY_EXISTS for another capability at the same path, FAILED_PRECONDITION for another path', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    expect(await codeOf(node.nodeStageVolume(stageReq({ volumeCapability: mountCap('xfs') }), ctx))).toBe('ALREADY_EXISTS');
    expect(await codeOf(node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx))).toBe('ALREADY_EXISTS');
    expect(await codeOf(node.nodeStageVolume(stageReq({ volumeCapability: mountCap('', ['noatime']) }), ctx))).toBe('ALREADY_EXISTS');
    expect(await codeOf(node.nodeStageVolume(stageReq({ stagingTargetPath: '/elsewhere' }), ctx))).toBe('FAILED_PRECONDITION');
    // '' and 'ext4' are the same request.
    await node.nodeStageVolume(stageReq({ volumeCapability: mountCap('ext4') }), ctx);
  });

  it('answers NOT_FOUND for a volume the engine does not serve, FAILED_PRECONDITION when the engine is down', async () => {
    expect(await codeOf(node.nodeStageVolume(stageReq({ volumeId: 'nope', volumeContext: {} }), ctx))).toBe('NOT_FOUND');
    expect(await codeOf(node.nodeStageVolume(stageReq({ volumeId: 'Not A Braid ID', volumeContext: {} }), ctx))).toBe('NOT_FOUND');
    machine.engineDown = true;
    expect(await codeOf(node.nodeStageVolume(stageReq(), ctx))).toBe('FAILED_PRECONDITION');
    expect(await records()).toEqual([]);
  });

  it('never reformats: another filesystem is FAILED_PRECONDITION, and a failed first stage leaves nothing behind', async () => {
    machine.contents.set('vol1', { kind: 'filesystem', fsType: 'xfs' });
    expect(await codeOf(node.nodeStageVolume(stageReq({ volumeCapability: mountCap('ext4') }), ctx))).toBe('FAILED_PRECONDITION');
    expect(machine.attacher.attached.size).toBe(0);
    expect(await records()).toEqual([]);
  });

  it('does not format a volume staged read-only, and mounts it ro', async () => {
    const readOnly = mountCap('ext4', [], 'SINGLE_NODE_READER_ONLY');
    expect(await codeOf(node.nodeStageVolume(stageReq({ volumeCapability: readOnly }), ctx))).toBe('FAILED_PRECONDITION');
    expect(machine.log).toEqual([]);
    machine.contents.set('vol1', { kind: 'filesystem', fsType: 'ext4' });
    await node.nodeStageVolume(stageReq({ volumeCapability: readOnly }), ctx);
    expect(machine.mounts.get(STAGING)).toMatchObject({ readOnly: true, options: ['ro'] });
  });

  it('answers ABORTED while another operation on the volume runs', async () => {
    let open!: () => void;
    machine.attacher.gate = new Promise((resolve) => (open = resolve));
    const first = node.nodeStageVolume(stageReq(), ctx);
    expect(await codeOf(node.nodeStageVolume(stageReq(), ctx))).toBe('ABORTED');
    expect(await codeOf(node.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: STAGING }, ctx))).toBe('ABORTED');
    open();
    await first;
  });
});

describe('NodePublishVolume and NodeUnpublishVolume', () => {
  it('refuses a volume that is not staged (FAILED_PRECONDITION) or does not exist (NOT_FOUND)', async () => {
    expect(await codeOf(node.nodePublishVolume(publishReq()))).toBe('FAILED_PRECONDITION');
    expect(await codeOf(node.nodePublishVolume(publishReq({ volumeId: 'nope', volumeContext: {} })))).toBe('NOT_FOUND');
  });

  it('binds the staging directory (mount), read-only when asked, idempotently', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    await node.nodePublishVolume(publishReq());
    await node.nodePublishVolume(publishReq());
    await node.nodePublishVolume(publishReq({ targetPath: `${TARGET}-ro`, readonly: true }));
    expect(machine.mounts.get(TARGET)).toMatchObject({ source: STAGING, kind: 'bind', readOnly: false });
    expect(machine.mounts.get(`${TARGET}-ro`)).toMatchObject({ source: STAGING, readOnly: true });
    expect(await codeOf(node.nodePublishVolume(publishReq({ readonly: true })))).toBe('ALREADY_EXISTS');
  });

  it('binds the device (block) and makes it read-only only while every publish is read-only', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    await node.nodePublishVolume(publishReq({ volumeCapability: blockCap(), readonly: true }));
    expect(machine.mounts.get(TARGET)).toMatchObject({ source: '/dev/loop0', kind: 'bind', readOnly: true });
    expect(machine.devices.get('/dev/loop0')?.readOnly).toBe(true);
    await node.nodePublishVolume(publishReq({ volumeCapability: blockCap(), targetPath: `${TARGET}-rw` }));
    expect(machine.devices.get('/dev/loop0')?.readOnly).toBe(false);
    await node.nodeUnpublishVolume({ volumeId: 'vol1', targetPath: `${TARGET}-rw` });
    expect(machine.devices.get('/dev/loop0')?.readOnly).toBe(true);
  });

  it('refuses another access type or filesystem than staged (INVALID_ARGUMENT), or another staging path', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    expect(await codeOf(node.nodePublishVolume(publishReq({ volumeCapability: mountCap() })))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(node.nodePublishVolume(publishReq({ volumeCapability: blockCap(), stagingTargetPath: '/other' })))).toBe('FAILED_PRECONDITION');
    await node.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: STAGING }, ctx);
    await node.nodeStageVolume(stageReq({ volumeCapability: mountCap('xfs') }), ctx);
    expect(await codeOf(node.nodePublishVolume(publishReq({ volumeCapability: mountCap('ext4') })))).toBe('INVALID_ARGUMENT');
    await node.nodePublishVolume(publishReq({ volumeCapability: mountCap('') }));
  });

  it('re-attaches a block volume whose attachment died before binding it', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    machine.attacher.kill('vol1');
    await node.nodePublishVolume(publishReq({ volumeCapability: blockCap() }));
    expect(machine.mounts.get(TARGET)?.source).toBe('/dev/loop1');
  });

  it('refuses to publish a mount volume whose staging mount is gone', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    machine.mounts.delete(STAGING);
    expect(await codeOf(node.nodePublishVolume(publishReq()))).toBe('FAILED_PRECONDITION');
  });

  it('unpublish unmounts and removes the target; a missing one is OK', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    await node.nodePublishVolume(publishReq());
    await node.nodeUnpublishVolume({ volumeId: 'vol1', targetPath: TARGET });
    expect(machine.mounts.has(TARGET)).toBe(false);
    expect(machine.paths.has(TARGET)).toBe(false);
    await node.nodeUnpublishVolume({ volumeId: 'vol1', targetPath: TARGET });
    await node.nodeUnpublishVolume({ volumeId: 'never-staged', targetPath: '/no/such/target' });
  });
});

describe('NodeUnstageVolume', () => {
  it('refuses while published, then unmounts, detaches and forgets; again is OK', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    await node.nodePublishVolume(publishReq());
    expect(await codeOf(node.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: STAGING }, ctx))).toBe('FAILED_PRECONDITION');
    expect(machine.mounts.has(STAGING)).toBe(true);
    await node.nodeUnpublishVolume({ volumeId: 'vol1', targetPath: TARGET });
    await node.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: STAGING }, ctx);
    expect(machine.mounts.size).toBe(0);
    expect(machine.attacher.attached.size).toBe(0);
    expect(await records()).toEqual([]);
    await node.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: STAGING }, ctx);
  });

  it('sees a publish the record does not know (a crash between bind and record)', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    machine.mounts.set('/somewhere/else', { source: '/dev/loop0', kind: 'bind', readOnly: false, fsType: null, options: [] });
    expect(await codeOf(node.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: STAGING }, ctx))).toBe('FAILED_PRECONDITION');
  });

  it('is OK for a volume never staged here', async () => {
    await node.nodeUnstageVolume({ volumeId: 'unknown', stagingTargetPath: STAGING }, ctx);
  });
});

describe('a restarted node plugin', () => {
  it('publishes what the previous process staged, and unstage cleans everything up', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    const restarted = newNode();
    await restarted.nodePublishVolume(publishReq({ volumeCapability: blockCap() }));
    await restarted.nodeUnpublishVolume({ volumeId: 'vol1', targetPath: TARGET });
    await restarted.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: STAGING }, ctx);
    expect(machine.attacher.attached.size).toBe(0);
    expect(await records()).toEqual([]);
  });
});

describe('NodeGetVolumeStats', () => {
  it('reports bytes and inodes of a filesystem volume, at the staging and the publish path', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    await node.nodePublishVolume(publishReq());
    for (const path of [STAGING, TARGET]) {
      const stats = await node.nodeGetVolumeStats(statsReq(path));
      expect(stats.volumeCondition.abnormal).toBe(false);
      expect(stats.usage).toEqual([
        { available: String(64 * MiB - 4096), total: String(64 * MiB), used: '4096', unit: 'BYTES' },
        { available: '990', total: '1000', used: '10', unit: 'INODES' },
      ]);
    }
  });

  it('reports the size of a block volume', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    await node.nodePublishVolume(publishReq({ volumeCapability: blockCap() }));
    expect(await node.nodeGetVolumeStats(statsReq(TARGET))).toEqual({
      usage: [{ total: String(64 * MiB), unit: 'BYTES' }],
      volumeCondition: { abnormal: false, message: expect.any(String) as string },
    });
  });

  it('reports an abnormal condition when the attachment died', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    machine.attacher.kill('vol1');
    const stats = await node.nodeGetVolumeStats(statsReq(STAGING));
    expect(stats.volumeCondition).toMatchObject({ abnormal: true });
    expect(stats.volumeCondition.message).toMatch(/NBD connection is dead/);
  });

  it('answers NOT_FOUND for an unknown volume, or a path that is not the volume\'s', async () => {
    expect(await codeOf(node.nodeGetVolumeStats(statsReq(STAGING)))).toBe('NOT_FOUND');
    await node.nodeStageVolume(stageReq(), ctx);
    expect(await codeOf(node.nodeGetVolumeStats(statsReq('/not/ours')))).toBe('NOT_FOUND');
    expect(await codeOf(node.nodeGetVolumeStats(statsReq(STAGING, 'other')))).toBe('NOT_FOUND');
  });
});

describe('NodeExpandVolume (offline: kernel NBD, nbdfuse)', () => {
  it('says it expands offline', () => {
    expect(node.onlineExpansion).toBe(false);
  });

  it('grows the filesystem of a volume staged after the controller grew it', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    await node.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: STAGING }, ctx);
    machine.exports.set('vol1', 128 * MiB); // ControllerExpandVolume
    await node.nodeStageVolume(stageReq(), ctx);
    const res = await node.nodeExpandVolume(expandReq(STAGING, { capacityRange: { requiredBytes: String(128 * MiB), limitBytes: '0' } }), ctx);
    expect(res).toEqual({ capacityBytes: String(128 * MiB) });
    expect(machine.log.at(-1)).toBe(`grow ${STAGING}`);
    const stats = await node.nodeGetVolumeStats(statsReq(STAGING));
    expect(stats.usage[0]?.total).toBe(String(128 * MiB));
  });

  it('re-attaches an unused block device so that it sees the new size', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    machine.exports.set('vol1', 96 * MiB);
    expect(await node.nodeExpandVolume(expandReq(STAGING), ctx)).toEqual({ capacityBytes: String(96 * MiB) });
  });

  it('is FAILED_PRECONDITION when the device would need a re-attach while in use', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    machine.exports.set('vol1', 128 * MiB);
    expect(await codeOf(node.nodeExpandVolume(expandReq(STAGING), ctx))).toBe('FAILED_PRECONDITION');
    await node.nodeUnstageVolume({ volumeId: 'vol1', stagingTargetPath: STAGING }, ctx);
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    await node.nodePublishVolume(publishReq({ volumeCapability: blockCap() }));
    machine.exports.set('vol1', 192 * MiB);
    expect(await codeOf(node.nodeExpandVolume(expandReq(TARGET), ctx))).toBe('FAILED_PRECONDITION');
  });

  it('is OUT_OF_RANGE beyond the volume, NOT_FOUND for an unknown volume or path', async () => {
    await node.nodeStageVolume(stageReq(), ctx);
    expect(await codeOf(node.nodeExpandVolume(expandReq(STAGING, { capacityRange: { requiredBytes: String(1024 * MiB), limitBytes: '0' } }), ctx))).toBe('OUT_OF_RANGE');
    expect(await codeOf(node.nodeExpandVolume(expandReq('/not/ours'), ctx))).toBe('NOT_FOUND');
    expect(await codeOf(node.nodeExpandVolume(expandReq(STAGING, { volumeId: 'other' }), ctx))).toBe('NOT_FOUND');
    expect(await codeOf(node.nodeExpandVolume(expandReq(STAGING, { volumeCapability: blockCap() }), ctx))).toBe('INVALID_ARGUMENT');
  });
});

describe('NodeExpandVolume (online: braid-fuse)', () => {
  beforeEach(() => {
    machine = new FakeMachine({ onlineResize: true });
    machine.exports.set('vol1', 64 * MiB);
    machine.paths.add(STAGING);
    node = newNode();
  });

  it('says it expands online', () => {
    expect(node.onlineExpansion).toBe(true);
  });

  it('grows a mounted and published filesystem in place: refresh, then the filesystem', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: mountCap('xfs') }), ctx);
    await node.nodePublishVolume(publishReq({ volumeCapability: mountCap('xfs') }));
    machine.exports.set('vol1', 128 * MiB); // ControllerExpandVolume
    const res = await node.nodeExpandVolume(expandReq(TARGET, { capacityRange: { requiredBytes: String(128 * MiB), limitBytes: '0' } }), ctx);
    expect(res).toEqual({ capacityBytes: String(128 * MiB) });
    expect(machine.log.slice(-2)).toEqual(['refresh /dev/loop0', `grow ${STAGING}`]);
    expect(machine.mounts.has(TARGET)).toBe(true); // never unpublished
    const stats = await node.nodeGetVolumeStats(statsReq(TARGET));
    expect(stats.usage[0]?.total).toBe(String(128 * MiB));
    // Asked again: nothing left to grow, the filesystem grow is a no-op.
    expect(await node.nodeExpandVolume(expandReq(STAGING), ctx)).toEqual({ capacityBytes: String(128 * MiB) });
  });

  it('grows a published block device in place', async () => {
    await node.nodeStageVolume(stageReq({ volumeCapability: blockCap() }), ctx);
    await node.nodePublishVolume(publishReq({ volumeCapability: blockCap() }));
    machine.exports.set('vol1', 96 * MiB);
    expect(await node.nodeExpandVolume(expandReq(TARGET), ctx)).toEqual({ capacityBytes: String(96 * MiB) });
    expect(machine.log).not.toContain(`grow ${STAGING}`);
  });

  it('an ext4 that cannot grow mounted (no CAP_SYS_RESOURCE) is a clear FAILED_PRECONDITION; the device did grow', async () => {
    machine.capSysResource = false;
    await node.nodeStageVolume(stageReq({ volumeCapability: mountCap('ext4') }), ctx);
    machine.exports.set('vol1', 128 * MiB);
    let message = '';
    try {
      await node.nodeExpandVolume(expandReq(STAGING), ctx);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/CAP_SYS_RESOURCE/);
    expect(await codeOf(node.nodeExpandVolume(expandReq(STAGING), ctx))).toBe('FAILED_PRECONDITION');
    expect(machine.devices.get('/dev/loop0')?.sizeBytes).toBe(128 * MiB);
  });
});
