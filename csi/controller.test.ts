/**
 * Controller conformance, volumes: every RPC with good and bad input, through a grpc-js client
 * generated from our csi.proto, against the real CSI server, the local backend and a REAL engine
 * daemon in a temp directory. Snapshots and clones: controller-snapshots.test.ts.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CONTEXT_EXPORT_NAME, CONTEXT_NBD_SOCKET } from './volume-context.ts';
import { TOPOLOGY_KEY } from './topology.ts';
import { codeOf, startCsiHarness, TEST_NODE_ID, type CsiHarness } from './testing/harness.ts';
import { blockCap, createVolumeRequest, GiB, MiB, mountCap, range } from './testing/requests.ts';

type Volume = { volumeId: string; capacityBytes: string; volumeContext: Record<string, string>; accessibleTopology: unknown[]; contentSource: unknown };

let h: CsiHarness;

beforeAll(async () => {
  h = await startCsiHarness({ engine: 'real' });
});

afterAll(async () => {
  await h.close();
});

async function create(name: string, extra: Record<string, unknown> = {}): Promise<Volume> {
  return (await h.controller('CreateVolume', createVolumeRequest(name, extra))).volume as Volume;
}

describe('ControllerGetCapabilities', () => {
  it('reports exactly the controller capabilities Braid implements', async () => {
    const res = await h.controller('ControllerGetCapabilities');
    const types = (res.capabilities as { rpc: { type: string } }[]).map((c) => c.rpc.type);
    expect(types).toEqual([
      'CREATE_DELETE_VOLUME',
      'CREATE_DELETE_SNAPSHOT',
      'LIST_SNAPSHOTS',
      'CLONE_VOLUME',
      'EXPAND_VOLUME',
      'GET_CAPACITY',
      'LIST_VOLUMES',
      'GET_VOLUME',
      'VOLUME_CONDITION',
    ]);
  });
});

describe('CreateVolume', () => {
  it('creates a block volume on this node, rounded up to 4 KiB, with a small volume context', async () => {
    const volume = await create('cv-basic', { capacityRange: range(10_000) });
    expect(volume.volumeId).toBe('cv-basic');
    expect(volume.capacityBytes).toBe('12288');
    expect(volume.accessibleTopology).toEqual([{ segments: { [TOPOLOGY_KEY]: TEST_NODE_ID } }]);
    expect(volume.volumeContext).toEqual({ [CONTEXT_EXPORT_NAME]: 'cv-basic', [CONTEXT_NBD_SOCKET]: `${h.dir}/nbd.sock` });
    expect(volume.contentSource).toBeNull();
    const engineVolume = await h.daemon?.pool.getVolume('cv-basic');
    expect(engineVolume?.sizeBytes).toBe(12288);
  });

  it('derives a valid engine name from any CSI name, the same on every retry', async () => {
    const first = await create('PVC Name/with Slash');
    expect(first.volumeId).toMatch(/^pvc-name-with-slash\.[0-9a-f]{16}$/);
    const again = await create('PVC Name/with Slash');
    expect(again).toEqual(first);
  });

  it('is idempotent: the same or a compatible request answers with the same volume', async () => {
    const first = await create('cv-idem', { capacityRange: range(MiB) });
    expect(await create('cv-idem', { capacityRange: range(MiB) })).toEqual(first);
    expect(await create('cv-idem', { capacityRange: range(MiB - 4096, 2 * MiB) })).toEqual(first);
    expect(await create('cv-idem', { capacityRange: range(MiB), volumeCapabilities: [mountCap('xfs')] })).toEqual(first);
  });

  it('answers ALREADY_EXISTS when the name is taken by an incompatible volume', async () => {
    await create('cv-taken', { capacityRange: range(MiB) });
    expect(await codeOf(create('cv-taken', { capacityRange: range(2 * MiB) }))).toBe('ALREADY_EXISTS');
    expect(await codeOf(create('cv-taken', { capacityRange: range(0, MiB / 2) }))).toBe('ALREADY_EXISTS');
  });

  it('accepts block and mount (ext4, xfs, default) with every single-node access mode', async () => {
    const caps = [
      blockCap('SINGLE_NODE_WRITER'),
      blockCap('SINGLE_NODE_SINGLE_WRITER'),
      blockCap('SINGLE_NODE_MULTI_WRITER'),
      blockCap('SINGLE_NODE_READER_ONLY'),
      mountCap('ext4'),
      mountCap('xfs'),
      mountCap(''),
    ];
    const volume = await create('cv-caps', { volumeCapabilities: caps });
    expect(volume.volumeId).toBe('cv-caps');
  });

  it.each([
    ['no name', { name: '' }],
    ['no capabilities', { volumeCapabilities: [] }],
    ['a capability without access type', { volumeCapabilities: [{ accessMode: { mode: 'SINGLE_NODE_WRITER' } }] }],
    ['a capability without access mode', { volumeCapabilities: [{ block: {} }] }],
    ['an UNKNOWN access mode', { volumeCapabilities: [blockCap('UNKNOWN')] }],
    ['a multi-node access mode', { volumeCapabilities: [blockCap('MULTI_NODE_MULTI_WRITER')] }],
    ['a multi-node reader mode', { volumeCapabilities: [mountCap('ext4', 'MULTI_NODE_READER_ONLY')] }],
    ['an unsupported filesystem', { volumeCapabilities: [mountCap('btrfs')] }],
    ['a limit below the required size', { capacityRange: range(2 * MiB, MiB) }],
    ['a negative size', { capacityRange: range(-1) }],
    ['dedup that is not a boolean', { parameters: { dedup: 'yes' } }],
    ['an unknown parameter', { parameters: { replicas: '3' } }],
    ['mutable parameters', { mutableParameters: { iops: '100' } }],
    ['an empty snapshot source', { volumeContentSource: { snapshot: { snapshotId: '' } } }],
    ['an empty volume source', { volumeContentSource: { volume: { volumeId: '' } } }],
  ])('refuses %s with INVALID_ARGUMENT', async (_what, extra) => {
    expect(await codeOf(h.controller('CreateVolume', createVolumeRequest('cv-invalid', extra)))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(h.controller('ControllerGetVolume', { volumeId: 'cv-invalid' }))).toBe('NOT_FOUND');
  });

  it.each([
    ['a size no whole block fits under the limit', range(1000, 1000)],
    ['a size beyond what the engine supports', range(2 ** 51)],
    ['a size beyond 2^53', range('9223372036854775807')],
  ])('refuses %s with OUT_OF_RANGE', async (_what, capacityRange) => {
    expect(await codeOf(create('cv-range', { capacityRange }))).toBe('OUT_OF_RANGE');
  });

  it('sizes a volume without a range at 1 GiB, or at the limit when only a smaller limit is given', async () => {
    expect((await create('cv-default', { capacityRange: null })).capacityBytes).toBe(String(GiB));
    expect((await create('cv-limit-only', { capacityRange: range(0, 10_000) })).capacityBytes).toBe('8192');
  });

  it('takes dedup "true" or "false" and ignores Kubernetes metadata parameters', async () => {
    await create('cv-dedup', { parameters: { dedup: 'true' } });
    const params = { dedup: 'false', 'csi.storage.k8s.io/pvc/name': 'disk', 'csi.storage.k8s.io/pvc/namespace': 'vms' };
    await create('cv-nodedup', { parameters: params });
  });

  it('answers NOT_FOUND for a missing content source', async () => {
    expect(await codeOf(create('cv-from-nothing', { volumeContentSource: { snapshot: { snapshotId: 'no-such-snap' } } }))).toBe('NOT_FOUND');
    expect(await codeOf(create('cv-from-nothing', { volumeContentSource: { volume: { volumeId: 'no-such-volume' } } }))).toBe('NOT_FOUND');
    expect(await codeOf(create('cv-from-nothing', { volumeContentSource: { volume: { volumeId: 'Not A Valid Name' } } }))).toBe('NOT_FOUND');
  });

  it('honours topology: requisite must include this node; preferred alone does not bind', async () => {
    const here = { segments: { [TOPOLOGY_KEY]: TEST_NODE_ID } };
    const elsewhere = { segments: { [TOPOLOGY_KEY]: 'other-node' } };
    await create('cv-topo-ok', { accessibilityRequirements: { requisite: [elsewhere, here], preferred: [here] } });
    await create('cv-topo-preferred', { accessibilityRequirements: { requisite: [], preferred: [elsewhere] } });
    const unreachable = { accessibilityRequirements: { requisite: [elsewhere], preferred: [] } };
    expect(await codeOf(create('cv-topo-bad', unreachable))).toBe('RESOURCE_EXHAUSTED');
    expect(await codeOf(create('cv-topo-ok', unreachable))).toBe('ALREADY_EXISTS');
  });
});

describe('DeleteVolume', () => {
  it('deletes a volume, and succeeds again when it is already gone', async () => {
    const volume = await create('dv-1');
    await h.controller('DeleteVolume', { volumeId: volume.volumeId });
    expect(await codeOf(h.controller('ControllerGetVolume', { volumeId: volume.volumeId }))).toBe('NOT_FOUND');
    await h.controller('DeleteVolume', { volumeId: volume.volumeId });
    await h.controller('DeleteVolume', { volumeId: 'never-existed' });
    await h.controller('DeleteVolume', { volumeId: 'Not A Valid Engine Name!' });
  });

  it('requires a volume ID', async () => {
    expect(await codeOf(h.controller('DeleteVolume', { volumeId: '' }))).toBe('INVALID_ARGUMENT');
  });
});

describe('ControllerGetVolume', () => {
  it('returns the volume and a healthy condition', async () => {
    const volume = await create('gv-1');
    const res = await h.controller('ControllerGetVolume', { volumeId: volume.volumeId });
    expect(res.volume).toEqual(volume);
    expect(res.status).toEqual({ publishedNodeIds: [], volumeCondition: { abnormal: false, message: 'volume is healthy' } });
  });

  it('answers NOT_FOUND for a missing volume and INVALID_ARGUMENT without an ID', async () => {
    expect(await codeOf(h.controller('ControllerGetVolume', { volumeId: 'gv-missing' }))).toBe('NOT_FOUND');
    expect(await codeOf(h.controller('ControllerGetVolume', { volumeId: '' }))).toBe('INVALID_ARGUMENT');
  });
});

describe('ControllerExpandVolume', () => {
  it('grows a volume online; a filesystem needs node expansion, a block device does not', async () => {
    const volume = await create('ev-1', { capacityRange: range(MiB) });
    const mount = await h.controller('ControllerExpandVolume', { volumeId: volume.volumeId, capacityRange: range(2 * MiB), volumeCapability: mountCap() });
    expect(mount).toEqual({ capacityBytes: String(2 * MiB), nodeExpansionRequired: true });
    const block = await h.controller('ControllerExpandVolume', { volumeId: volume.volumeId, capacityRange: range(3 * MiB + 1), volumeCapability: blockCap() });
    expect(block).toEqual({ capacityBytes: String(3 * MiB + 4096), nodeExpansionRequired: false });
    const unknown = await h.controller('ControllerExpandVolume', { volumeId: volume.volumeId, capacityRange: range(4 * MiB) });
    expect(unknown.nodeExpansionRequired).toBe(true);
    expect((await h.daemon?.pool.getVolume('ev-1'))?.sizeBytes).toBe(4 * MiB);
  });

  it('is idempotent and never shrinks', async () => {
    const volume = await create('ev-2', { capacityRange: range(2 * MiB) });
    const res = await h.controller('ControllerExpandVolume', { volumeId: volume.volumeId, capacityRange: range(MiB), volumeCapability: blockCap() });
    expect(res.capacityBytes).toBe(String(2 * MiB));
  });

  it('answers NOT_FOUND, INVALID_ARGUMENT and OUT_OF_RANGE as the spec says', async () => {
    const volume = await create('ev-3', { capacityRange: range(2 * MiB) });
    expect(await codeOf(h.controller('ControllerExpandVolume', { volumeId: 'ev-missing', capacityRange: range(MiB) }))).toBe('NOT_FOUND');
    expect(await codeOf(h.controller('ControllerExpandVolume', { volumeId: '', capacityRange: range(MiB) }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(h.controller('ControllerExpandVolume', { volumeId: volume.volumeId }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(h.controller('ControllerExpandVolume', { volumeId: volume.volumeId, capacityRange: range(0, 4 * MiB) }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(h.controller('ControllerExpandVolume', { volumeId: volume.volumeId, capacityRange: range(MiB, MiB) }))).toBe('OUT_OF_RANGE');
    expect(await codeOf(h.controller('ControllerExpandVolume', { volumeId: volume.volumeId, capacityRange: range(2 ** 51) }))).toBe('OUT_OF_RANGE');
  });
});

describe('ValidateVolumeCapabilities', () => {
  it('confirms supported capabilities, echoing what it validated', async () => {
    const volume = await create('vc-1');
    const request = { volumeId: volume.volumeId, volumeContext: volume.volumeContext, volumeCapabilities: [blockCap(), mountCap('xfs')], parameters: { dedup: 'true' } };
    const res = await h.controller('ValidateVolumeCapabilities', request);
    expect(res.message).toBe('');
    expect(res.confirmed).toMatchObject({ volumeContext: volume.volumeContext, parameters: { dedup: 'true' } });
    expect((res.confirmed as { volumeCapabilities: unknown[] }).volumeCapabilities).toHaveLength(2);
  });

  it.each([
    ['a multi-node mode', { volumeCapabilities: [blockCap('MULTI_NODE_MULTI_WRITER')] }],
    ['an unsupported filesystem', { volumeCapabilities: [mountCap('zfs')] }],
    ['an unknown parameter', { volumeCapabilities: [blockCap()], parameters: { fast: 'yes' } }],
  ])('does not confirm %s, and says why', async (_what, extra) => {
    const volume = await create('vc-2');
    const res = await h.controller('ValidateVolumeCapabilities', { volumeId: volume.volumeId, ...extra });
    expect(res.confirmed).toBeNull();
    expect(res.message).not.toBe('');
  });

  it('answers NOT_FOUND for a missing volume and INVALID_ARGUMENT for a malformed request', async () => {
    const volume = await create('vc-3');
    expect(await codeOf(h.controller('ValidateVolumeCapabilities', { volumeId: 'vc-missing', volumeCapabilities: [blockCap()] }))).toBe('NOT_FOUND');
    expect(await codeOf(h.controller('ValidateVolumeCapabilities', { volumeId: '', volumeCapabilities: [blockCap()] }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(h.controller('ValidateVolumeCapabilities', { volumeId: volume.volumeId, volumeCapabilities: [] }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(h.controller('ValidateVolumeCapabilities', { volumeId: volume.volumeId, volumeCapabilities: [{ block: {} }] }))).toBe('INVALID_ARGUMENT');
  });
});

describe('GetCapacity', () => {
  it('reports the free space of the pool filesystem for an unlimited pool', async () => {
    const res = await h.controller('GetCapacity', { volumeCapabilities: [blockCap()], parameters: { dedup: 'false' } });
    expect(Number(res.availableCapacity)).toBeGreaterThan(0);
  });

  it('reports nothing for another node, or for capabilities Braid cannot serve', async () => {
    const elsewhere = await h.controller('GetCapacity', { accessibleTopology: { segments: { [TOPOLOGY_KEY]: 'other-node' } } });
    expect(elsewhere.availableCapacity).toBe('0');
    const here = await h.controller('GetCapacity', { accessibleTopology: { segments: { [TOPOLOGY_KEY]: TEST_NODE_ID } } });
    expect(Number(here.availableCapacity)).toBeGreaterThan(0);
    const multi = await h.controller('GetCapacity', { volumeCapabilities: [blockCap('MULTI_NODE_MULTI_WRITER')] });
    expect(multi.availableCapacity).toBe('0');
  });

  it('refuses unknown parameters and malformed capabilities', async () => {
    expect(await codeOf(h.controller('GetCapacity', { parameters: { colour: 'blue' } }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(h.controller('GetCapacity', { volumeCapabilities: [{ block: {} }] }))).toBe('INVALID_ARGUMENT');
  });
});

describe('GetCapacity with a pool budget', () => {
  let budgeted: CsiHarness;
  beforeAll(async () => {
    budgeted = await startCsiHarness({ engine: 'real', capacityBytes: 64 * MiB });
  });
  afterAll(async () => {
    await budgeted.close();
  });

  it('reports the budget minus what the pool uses on disk', async () => {
    const stats = await budgeted.daemon?.pool.stats();
    const res = await budgeted.controller('GetCapacity', {});
    expect(res.availableCapacity).toBe(String(64 * MiB - (stats?.physicalBytes ?? 0)));
  });
});

describe('ListVolumes', () => {
  let lh: CsiHarness;
  const names = ['lv-a', 'lv-b', 'lv-c', 'lv-d', 'lv-e'];

  beforeEach(async () => {
    lh = await startCsiHarness({ engine: 'real' });
    for (const name of names) await lh.controller('CreateVolume', createVolumeRequest(name));
  });

  afterEach(async () => {
    await lh.close();
  });

  async function ids(request: object): Promise<{ ids: string[]; nextToken: string }> {
    const res = await lh.controller('ListVolumes', request);
    const entries = res.entries as { volume: { volumeId: string }; status: { volumeCondition: unknown } }[];
    for (const entry of entries) expect(entry.status.volumeCondition).toEqual({ abnormal: false, message: 'volume is healthy' });
    return { ids: entries.map((e) => e.volume.volumeId), nextToken: res.nextToken as string };
  }

  it('lists every volume, sorted, without max_entries', async () => {
    expect(await ids({})).toEqual({ ids: names, nextToken: '' });
  });

  it('pages with max_entries and next_token', async () => {
    const first = await ids({ maxEntries: 2 });
    expect(first.ids).toEqual(['lv-a', 'lv-b']);
    const second = await ids({ maxEntries: 2, startingToken: first.nextToken });
    expect(second.ids).toEqual(['lv-c', 'lv-d']);
    const third = await ids({ maxEntries: 2, startingToken: second.nextToken });
    expect(third).toEqual({ ids: ['lv-e'], nextToken: '' });
  });

  it('accepts a token whose last volume was deleted and sees volumes added between pages', async () => {
    const first = await ids({ maxEntries: 2 });
    await lh.controller('DeleteVolume', { volumeId: 'lv-b' });
    await lh.controller('CreateVolume', createVolumeRequest('lv-c2'));
    expect((await ids({ startingToken: first.nextToken })).ids).toEqual(['lv-c', 'lv-c2', 'lv-d', 'lv-e']);
  });

  it('answers ABORTED for a token it did not issue and INVALID_ARGUMENT for negative max_entries', async () => {
    expect(await codeOf(lh.controller('ListVolumes', { startingToken: 'invalid-token' }))).toBe('ABORTED');
    expect(await codeOf(lh.controller('ListVolumes', { maxEntries: -1 }))).toBe('INVALID_ARGUMENT');
  });
});

describe('RPCs Braid does not offer', () => {
  it.each(['ControllerPublishVolume', 'ControllerUnpublishVolume', 'ControllerModifyVolume'])('%s is UNIMPLEMENTED', async (method) => {
    expect(await codeOf(h.controller(method, { volumeId: 'x', nodeId: TEST_NODE_ID }))).toBe('UNIMPLEMENTED');
  });
});
