/**
 * The controller's answers checked against the data path of a REAL engine: the volume context
 * names an NBD export a client can open; a clone (from a snapshot or a volume) starts with its
 * source's bytes; a volume that is in use cannot be deleted (FAILED_PRECONDITION, the spec's
 * "volume in use"), and an online expansion is visible to a connected client.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NbdClient } from '../test/lib/nbd-client.ts';
import { CONTEXT_EXPORT_NAME, CONTEXT_NBD_SOCKET } from './volume-context.ts';
import { codeOf, startCsiHarness, type CsiHarness } from './testing/harness.ts';
import { blockCap, createVolumeRequest, MiB, range, snapshotSource, volumeSource } from './testing/requests.ts';

type Volume = { volumeId: string; capacityBytes: string; volumeContext: Record<string, string> };

let h: CsiHarness;
const clients: NbdClient[] = [];

beforeEach(async () => {
  h = await startCsiHarness({ engine: 'real' });
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.destroy();
  await h.close();
});

async function createVolume(name: string, extra: Record<string, unknown> = {}): Promise<Volume> {
  return (await h.controller('CreateVolume', createVolumeRequest(name, extra))).volume as Volume;
}

/** Opens the export the way the node plugin will: from the volume context alone. */
async function open(volume: Volume): Promise<NbdClient> {
  const socket = volume.volumeContext[CONTEXT_NBD_SOCKET];
  const exportName = volume.volumeContext[CONTEXT_EXPORT_NAME];
  if (socket === undefined || exportName === undefined) throw new Error('volume context lacks the export');
  const client = await NbdClient.connect(socket, exportName);
  clients.push(client);
  return client;
}

const pattern = (byte: number) => Buffer.alloc(64 * 1024, byte);

describe('data behind the controller', () => {
  it('serves the volume under the export named in its context, at its size', async () => {
    const volume = await createVolume('data-1', { capacityRange: range(2 * MiB) });
    const client = await open(volume);
    expect(client.info.sizeBytes).toBe(2 * MiB);
    await client.write(0, pattern(0xab));
    await client.flush();
    expect(await client.read(0, 64 * 1024)).toEqual(pattern(0xab));
  });

  it('clones carry their source\'s bytes, from a snapshot taken before later writes', async () => {
    const golden = await createVolume('golden', { capacityRange: range(MiB) });
    const writer = await open(golden);
    await writer.write(0, pattern(0x11));
    await writer.flush();
    await h.controller('CreateSnapshot', { name: 'golden-snap', sourceVolumeId: golden.volumeId });
    await writer.write(0, pattern(0x22));
    await writer.flush();

    const fromSnapshot = await createVolume('vm-snap', { volumeContentSource: snapshotSource('golden-snap') });
    const fromVolume = await createVolume('vm-vol', { volumeContentSource: volumeSource('golden') });
    expect(await (await open(fromSnapshot)).read(0, 64 * 1024)).toEqual(pattern(0x11));
    expect(await (await open(fromVolume)).read(0, 64 * 1024)).toEqual(pattern(0x22));
  });

  it('refuses to delete a volume in use with FAILED_PRECONDITION, and deletes it once released', async () => {
    const volume = await createVolume('busy');
    const client = await open(volume);
    expect(await codeOf(h.controller('DeleteVolume', { volumeId: volume.volumeId }))).toBe('FAILED_PRECONDITION');
    await client.disconnect();
    clients.splice(clients.indexOf(client), 1);
    await waitFor(async () => (await h.daemon?.pool.getVolume('busy'))?.openHandles === 0);
    await h.controller('DeleteVolume', { volumeId: volume.volumeId });
  });

  it('expands a volume while a client is connected (ONLINE expansion)', async () => {
    const volume = await createVolume('grow', { capacityRange: range(MiB) });
    const client = await open(volume);
    await h.controller('ControllerExpandVolume', { volumeId: volume.volumeId, capacityRange: range(4 * MiB), volumeCapability: blockCap() });
    await client.write(3 * MiB, pattern(0x33));
    await client.flush();
    expect(await client.read(3 * MiB, 64 * 1024)).toEqual(pattern(0x33));
  });
});

async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('condition not reached');
}
