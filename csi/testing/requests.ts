/** Request builders for the CSI tests: the shapes a CO sends, with our defaults filled in. */
import type { AccessModeName } from '../messages.ts';

export const GiB = 2 ** 30;
export const MiB = 2 ** 20;

export function blockCap(mode: AccessModeName = 'SINGLE_NODE_WRITER'): object {
  return { block: {}, accessMode: { mode } };
}

export function mountCap(fsType = 'ext4', mode: AccessModeName = 'SINGLE_NODE_WRITER'): object {
  return { mount: { fsType, mountFlags: [] }, accessMode: { mode } };
}

export function range(requiredBytes: number | string, limitBytes: number | string = 0): object {
  return { requiredBytes: String(requiredBytes), limitBytes: String(limitBytes) };
}

/** A CreateVolume request for a 1 MiB block volume, with `extra` fields on top. */
export function createVolumeRequest(name: string, extra: Record<string, unknown> = {}): object {
  return { name, capacityRange: range(MiB), volumeCapabilities: [blockCap()], ...extra };
}

export function snapshotSource(snapshotId: string): object {
  return { snapshot: { snapshotId } };
}

export function volumeSource(volumeId: string): object {
  return { volume: { volumeId } };
}
