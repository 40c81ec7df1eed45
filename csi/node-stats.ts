/**
 * NodeGetVolumeStats: usage and condition of a staged or published volume.
 *
 * Usage: a filesystem volume reports bytes and inodes of the filesystem (statfs of the path);
 * a block volume only its total size, since what is used inside it is the guest's business.
 * Condition: abnormal when the volume cannot serve I/O as the pod sees it: the attachment is
 * gone or dead (nbdfuse exited, the engine restarted under a kernel NBD device, the loop
 * device was detached), or the path no longer has the volume mounted.
 */
import type { VolumeCondition } from './messages.ts';
import type { NodeGetVolumeStatsResponse, VolumeUsage } from './node-messages.ts';
import type { StagedVolume } from './node-state.ts';
import type { NodeSystem } from './node-system.ts';
import { toWireInt64 } from './proto.ts';

const HEALTHY: VolumeCondition = { abnormal: false, message: 'volume is attached and mounted as staged' };

export async function volumeStats(system: NodeSystem, record: StagedVolume, volumePath: string, attachDir: string): Promise<NodeGetVolumeStatsResponse> {
  const live = await system.attacher.find(record.exportName, attachDir);
  if (live === undefined) {
    return {
      usage: [],
      volumeCondition: {
        abnormal: true,
        message: `the block device of volume ${record.volumeId} is gone or its NBD connection is dead: unpublish and unstage the volume, then stage it again`,
      },
    };
  }
  if (record.accessType === 'block') {
    const total = await system.deviceSizeBytes(live.devicePath);
    return { usage: [{ total: toWireInt64(total), unit: 'BYTES' }], volumeCondition: HEALTHY };
  }
  if (!(await system.isMountPoint(volumePath))) {
    // statfs would describe the filesystem underneath: no numbers rather than wrong ones.
    return { usage: [], volumeCondition: { abnormal: true, message: `nothing is mounted at ${volumePath}` } };
  }
  const fs = await system.filesystemStats(volumePath);
  const usage: VolumeUsage[] = [
    { available: toWireInt64(fs.availableBytes), total: toWireInt64(fs.totalBytes), used: toWireInt64(fs.usedBytes), unit: 'BYTES' },
    { available: toWireInt64(fs.freeInodes), total: toWireInt64(fs.totalInodes), used: toWireInt64(fs.usedInodes), unit: 'INODES' },
  ];
  return { usage, volumeCondition: HEALTHY };
}
