/**
 * Controller conformance, snapshots and clones: CreateSnapshot / DeleteSnapshot / ListSnapshots
 * and CreateVolume from a snapshot or a volume, against a REAL engine daemon; then what the real
 * engine cannot show (it does not report a clone's source or a volume's dedup flag, and cannot
 * be paused mid-call) against the in-memory FakeEngine behind the same server and backend.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { codeOf, startCsiHarness, type CsiHarness } from './testing/harness.ts';
import { createVolumeRequest, MiB, range, snapshotSource, volumeSource } from './testing/requests.ts';

type Snapshot = { snapshotId: string; sourceVolumeId: string; sizeBytes: string; readyToUse: boolean; creationTime: { seconds: string; nanos: number } };
type Volume = { volumeId: string; capacityBytes: string; contentSource: unknown };

async function createVolume(h: CsiHarness, name: string, extra: Record<string, unknown> = {}): Promise<Volume> {
  return (await h.controller('CreateVolume', createVolumeRequest(name, extra))).volume as Volume;
}

async function createSnapshot(h: CsiHarness, name: string, sourceVolumeId: string, extra: Record<string, unknown> = {}): Promise<Snapshot> {
  return (await h.controller('CreateSnapshot', { name, sourceVolumeId, ...extra })).snapshot as Snapshot;
}

async function listSnapshots(h: CsiHarness, request: object): Promise<{ ids: string[]; nextToken: string }> {
  const res = await h.controller('ListSnapshots', request);
  return { ids: (res.entries as { snapshot: Snapshot }[]).map((e) => e.snapshot.snapshotId), nextToken: res.nextToken as string };
}

describe('with a real engine', () => {
  let h: CsiHarness;

  beforeEach(async () => {
    h = await startCsiHarness({ engine: 'real' });
  });

  afterEach(async () => {
    await h.close();
  });

  describe('CreateSnapshot', () => {
    it('snapshots a volume: ready at once, its size, its source, its creation time', async () => {
      const volume = await createVolume(h, 'vol-1', { capacityRange: range(2 * MiB) });
      const before = Date.now();
      const snapshot = await createSnapshot(h, 'snap-1', volume.volumeId);
      expect(snapshot).toMatchObject({ snapshotId: 'snap-1', sourceVolumeId: 'vol-1', sizeBytes: String(2 * MiB), readyToUse: true });
      const createdMs = Number(snapshot.creationTime.seconds) * 1000 + snapshot.creationTime.nanos / 1e6;
      expect(createdMs).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
      expect(createdMs).toBeLessThanOrEqual(Date.now());
      expect((await h.daemon?.pool.getSnapshot('snap-1'))?.sourceVolume).toBe('vol-1');
    });

    it('is idempotent for the same name and source; ALREADY_EXISTS for another source', async () => {
      const a = await createVolume(h, 'vol-a');
      const b = await createVolume(h, 'vol-b');
      const first = await createSnapshot(h, 'Snap One', a.volumeId);
      expect(first.snapshotId).toMatch(/^snap-one\.[0-9a-f]{16}$/);
      expect(await createSnapshot(h, 'Snap One', a.volumeId)).toEqual(first);
      expect(await codeOf(createSnapshot(h, 'Snap One', b.volumeId))).toBe('ALREADY_EXISTS');
    });

    it('answers INVALID_ARGUMENT for a malformed request and NOT_FOUND for a missing source', async () => {
      const volume = await createVolume(h, 'vol-1');
      expect(await codeOf(createSnapshot(h, '', volume.volumeId))).toBe('INVALID_ARGUMENT');
      expect(await codeOf(createSnapshot(h, 'snap-x', ''))).toBe('INVALID_ARGUMENT');
      expect(await codeOf(createSnapshot(h, 'snap-x', volume.volumeId, { parameters: { retention: '7d' } }))).toBe('INVALID_ARGUMENT');
      expect(await codeOf(createSnapshot(h, 'snap-x', 'no-such-volume'))).toBe('NOT_FOUND');
      await createSnapshot(h, 'snap-y', volume.volumeId, { parameters: { 'csi.storage.k8s.io/volumesnapshot/name': 's' } });
    });

    it('refuses to snapshot a snapshot (NOT_FOUND: it is not a volume)', async () => {
      const volume = await createVolume(h, 'vol-1');
      await createSnapshot(h, 'snap-1', volume.volumeId);
      expect(await codeOf(createSnapshot(h, 'snap-of-snap', 'snap-1'))).toBe('NOT_FOUND');
    });
  });

  describe('DeleteSnapshot', () => {
    it('deletes, then succeeds again for a snapshot that is gone', async () => {
      const volume = await createVolume(h, 'vol-1');
      await createSnapshot(h, 'snap-1', volume.volumeId);
      await h.controller('DeleteSnapshot', { snapshotId: 'snap-1' });
      expect((await listSnapshots(h, {})).ids).toEqual([]);
      await h.controller('DeleteSnapshot', { snapshotId: 'snap-1' });
      await h.controller('DeleteSnapshot', { snapshotId: 'Not Valid!' });
      expect(await codeOf(h.controller('DeleteSnapshot', { snapshotId: '' }))).toBe('INVALID_ARGUMENT');
    });

    it('does not delete a volume of the same ID, and DeleteVolume does not delete a snapshot', async () => {
      const volume = await createVolume(h, 'vol-1');
      await createSnapshot(h, 'snap-1', volume.volumeId);
      await h.controller('DeleteSnapshot', { snapshotId: 'vol-1' });
      await h.controller('DeleteVolume', { volumeId: 'snap-1' });
      expect((await h.controller('ControllerGetVolume', { volumeId: 'vol-1' })).volume).toBeTruthy();
      expect((await listSnapshots(h, {})).ids).toEqual(['snap-1']);
    });
  });

  describe('ListSnapshots', () => {
    beforeEach(async () => {
      await createVolume(h, 'vol-a');
      await createVolume(h, 'vol-b');
      for (const [name, source] of [['s1', 'vol-a'], ['s2', 'vol-b'], ['s3', 'vol-a'], ['s4', 'vol-a'], ['s5', 'vol-b']]) {
        await createSnapshot(h, name as string, source as string);
      }
    });

    it('lists all, filters by snapshot ID and by source volume', async () => {
      expect(await listSnapshots(h, {})).toEqual({ ids: ['s1', 's2', 's3', 's4', 's5'], nextToken: '' });
      expect((await listSnapshots(h, { snapshotId: 's3' })).ids).toEqual(['s3']);
      expect((await listSnapshots(h, { snapshotId: 'no-such-snapshot' })).ids).toEqual([]);
      expect((await listSnapshots(h, { snapshotId: 'vol-a' })).ids).toEqual([]);
      expect((await listSnapshots(h, { sourceVolumeId: 'vol-b' })).ids).toEqual(['s2', 's5']);
      expect((await listSnapshots(h, { sourceVolumeId: 'vol-a', snapshotId: 's2' })).ids).toEqual([]);
      expect((await listSnapshots(h, { sourceVolumeId: 'no-such-volume' })).ids).toEqual([]);
    });

    it('pages with max_entries and next_token, with filters', async () => {
      const first = await listSnapshots(h, { maxEntries: 2, sourceVolumeId: 'vol-a' });
      expect(first.ids).toEqual(['s1', 's3']);
      expect(await listSnapshots(h, { maxEntries: 2, sourceVolumeId: 'vol-a', startingToken: first.nextToken })).toEqual({ ids: ['s4'], nextToken: '' });
      const all: string[] = [];
      let token = '';
      do {
        const page = await listSnapshots(h, { maxEntries: 3, startingToken: token });
        all.push(...page.ids);
        token = page.nextToken;
      } while (token !== '');
      expect(all).toEqual(['s1', 's2', 's3', 's4', 's5']);
    });

    it('answers ABORTED for a foreign token and INVALID_ARGUMENT for negative max_entries', async () => {
      expect(await codeOf(h.controller('ListSnapshots', { startingToken: 'not-ours' }))).toBe('ABORTED');
      expect(await codeOf(h.controller('ListSnapshots', { maxEntries: -5 }))).toBe('INVALID_ARGUMENT');
    });
  });

  describe('CreateVolume from a snapshot or a volume', () => {
    it('clones a snapshot: content source in the answer, at least the snapshot size, retries idempotent', async () => {
      const volume = await createVolume(h, 'golden', { capacityRange: range(4 * MiB) });
      await createSnapshot(h, 'golden-snap', volume.volumeId);
      const request = { capacityRange: range(MiB), volumeContentSource: snapshotSource('golden-snap') };
      const clone = await createVolume(h, 'vm-1', request);
      expect(clone).toMatchObject({ volumeId: 'vm-1', capacityBytes: String(4 * MiB), contentSource: { snapshot: { snapshotId: 'golden-snap' } } });
      expect(await createVolume(h, 'vm-1', request)).toMatchObject({ volumeId: 'vm-1', capacityBytes: String(4 * MiB) });
      expect((await h.daemon?.pool.getVolume('vm-1'))?.sizeBytes).toBe(4 * MiB);
    });

    it('clones a volume and may grow the clone', async () => {
      const volume = await createVolume(h, 'golden', { capacityRange: range(2 * MiB) });
      const clone = await createVolume(h, 'vm-2', { capacityRange: range(8 * MiB), volumeContentSource: volumeSource(volume.volumeId) });
      expect(clone).toMatchObject({ capacityBytes: String(8 * MiB), contentSource: { volume: { volumeId: 'golden' } } });
    });

    it('answers OUT_OF_RANGE when the limit is below the source size', async () => {
      const volume = await createVolume(h, 'golden', { capacityRange: range(4 * MiB) });
      await createSnapshot(h, 'golden-snap', volume.volumeId);
      const tooSmall = { capacityRange: range(MiB, 2 * MiB), volumeContentSource: snapshotSource('golden-snap') };
      expect(await codeOf(createVolume(h, 'vm-small', tooSmall))).toBe('OUT_OF_RANGE');
    });

    it('answers NOT_FOUND when the source is the wrong kind (a volume named as a snapshot, or the reverse)', async () => {
      const volume = await createVolume(h, 'golden');
      await createSnapshot(h, 'golden-snap', volume.volumeId);
      expect(await codeOf(createVolume(h, 'vm-x', { volumeContentSource: snapshotSource('golden') }))).toBe('NOT_FOUND');
      expect(await codeOf(createVolume(h, 'vm-x', { volumeContentSource: volumeSource('golden-snap') }))).toBe('NOT_FOUND');
    });

    it('lives through its lifecycle: snapshot, clone, delete the snapshot, the source, then the clone', async () => {
      const volume = await createVolume(h, 'golden');
      await createSnapshot(h, 'golden-snap', volume.volumeId);
      await createVolume(h, 'vm-1', { volumeContentSource: snapshotSource('golden-snap') });
      await h.controller('DeleteSnapshot', { snapshotId: 'golden-snap' });
      await h.controller('DeleteVolume', { volumeId: 'golden' });
      expect((await h.controller('ControllerGetVolume', { volumeId: 'vm-1' })).volume).toMatchObject({ volumeId: 'vm-1' });
      await h.controller('DeleteVolume', { volumeId: 'vm-1' });
      expect((await h.controller('ListVolumes', {})).entries).toEqual([]);
    });
  });
});

describe('with an engine that reports sources (FakeEngine)', () => {
  let h: CsiHarness;

  beforeAll(async () => {
    h = await startCsiHarness({ engine: 'fake' });
    await createVolume(h, 'golden');
    await createSnapshot(h, 'golden-snap', 'golden');
    await createVolume(h, 'other');
  });

  afterAll(async () => {
    await h.close();
  });

  it('answers ALREADY_EXISTS when a retry names another source, or none', async () => {
    await createVolume(h, 'vm-1', { volumeContentSource: snapshotSource('golden-snap') });
    expect(await codeOf(createVolume(h, 'vm-1', { volumeContentSource: volumeSource('other') }))).toBe('ALREADY_EXISTS');
    expect(await codeOf(createVolume(h, 'vm-1'))).toBe('ALREADY_EXISTS');
    expect(await codeOf(createVolume(h, 'golden', { volumeContentSource: volumeSource('other') }))).toBe('ALREADY_EXISTS');
  });

  it('reports a clone\'s source in ControllerGetVolume and ListVolumes', async () => {
    await createVolume(h, 'vm-2', { volumeContentSource: volumeSource('golden') });
    const got = await h.controller('ControllerGetVolume', { volumeId: 'vm-2' });
    expect(got.volume).toMatchObject({ contentSource: { volume: { volumeId: 'golden' } } });
    const listed = (await h.controller('ListVolumes', {})).entries as { volume: { volumeId: string; contentSource: unknown } }[];
    expect(listed.find((e) => e.volume.volumeId === 'vm-2')?.volume.contentSource).toMatchObject({ volume: { volumeId: 'golden' } });
  });

  it('answers ALREADY_EXISTS when a retry asks for another dedup setting', async () => {
    await createVolume(h, 'dd', { parameters: { dedup: 'true' } });
    await createVolume(h, 'dd', { parameters: { dedup: 'true' } });
    expect(await codeOf(createVolume(h, 'dd', { parameters: { dedup: 'false' } }))).toBe('ALREADY_EXISTS');
    expect(h.fake?.volumes.get('dd')?.dedup).toBe(true);
  });

  it('answers ABORTED to a second operation on a volume while the first is in flight', async () => {
    const fake = h.fake;
    if (fake === undefined) throw new Error('no fake engine');
    let open!: () => void;
    fake.gate = new Promise<void>((resolve) => (open = resolve));
    const first = createVolume(h, 'slow');
    await waitFor(() => fake.calls.includes('createVolume') && fake.gate !== undefined);
    expect(await codeOf(createVolume(h, 'slow'))).toBe('ABORTED');
    expect(await codeOf(h.controller('DeleteVolume', { volumeId: 'slow' }))).toBe('ABORTED');
    fake.gate = undefined;
    open();
    expect((await first).volumeId).toBe('slow');
    await h.controller('DeleteVolume', { volumeId: 'slow' });
  });

  it('reports an abnormal condition when the pool turned read-only', async () => {
    const fake = h.fake;
    if (fake === undefined) throw new Error('no fake engine');
    fake.readOnly = true;
    try {
      const got = await h.controller('ControllerGetVolume', { volumeId: 'golden' });
      expect(got.status).toMatchObject({ volumeCondition: { abnormal: true } });
    } finally {
      fake.readOnly = false;
    }
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  if (!condition()) throw new Error('condition not reached');
}
