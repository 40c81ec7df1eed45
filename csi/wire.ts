/** Conversions from the controller backend's objects to CSI messages. */
import type { BackendSnapshot, BackendVolume, ContentSource } from './controller-backend.ts';
import type { Snapshot, Volume, VolumeContentSource } from './messages.ts';
import { toTimestamp, toWireInt64 } from './proto.ts';

export function toWireVolume(v: BackendVolume): Volume {
  const volume: Volume = {
    capacityBytes: toWireInt64(v.capacityBytes),
    volumeId: v.volumeId,
    volumeContext: v.context,
    accessibleTopology: v.topology,
  };
  if (v.source != null) volume.contentSource = toWireSource(v.source);
  return volume;
}

export function toWireSource(source: ContentSource): VolumeContentSource {
  return source.kind === 'snapshot' ? { snapshot: { snapshotId: source.id } } : { volume: { volumeId: source.id } };
}

export function toWireSnapshot(s: BackendSnapshot): Snapshot {
  return {
    sizeBytes: toWireInt64(s.sizeBytes),
    snapshotId: s.snapshotId,
    sourceVolumeId: s.sourceVolumeId,
    creationTime: toTimestamp(s.createdAtMs),
    readyToUse: s.readyToUse,
  };
}
