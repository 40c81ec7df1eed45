import { describe, expect, it } from 'vitest';
import { mountsAt, parseMountInfo, unescapeOctal } from './mountinfo.ts';

const SAMPLE = [
  '22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw',
  '36 22 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue',
  '42 27 0:39 / /var/lib/braid/attach/fuse-vm1 rw,nosuid,nodev,relatime - fuse /dev/fuse rw,user_id=0,group_id=0',
  '50 22 0:5 /loop0 /var/lib/kubelet/pods/p/volumeDevices/x/pvc rw,nosuid shared:3 - devtmpfs udev rw,size=1k',
  '51 22 7:0 / /mnt/with\\040space rw - xfs /dev/loop0 rw,attr2',
  '52 22 7:0 / /mnt/with\\040space ro - xfs /dev/loop0 ro,attr2',
  '',
].join('\n');

describe('parseMountInfo', () => {
  const table = parseMountInfo(SAMPLE);

  it('reads every field, with or without optional fields', () => {
    expect(table).toHaveLength(6);
    expect(table[1]).toEqual({
      mountId: 36,
      parentId: 22,
      majorMinor: '98:0',
      root: '/mnt1',
      mountPoint: '/mnt/parent',
      mountOptions: 'rw,noatime',
      fsType: 'ext3',
      source: '/dev/root',
      superOptions: 'rw,errors=continue',
    });
    expect(table[2]).toMatchObject({ mountPoint: '/var/lib/braid/attach/fuse-vm1', fsType: 'fuse', majorMinor: '0:39' });
  });

  it('shows a bind-mounted device node as the node inside devtmpfs', () => {
    expect(table[3]).toMatchObject({ root: '/loop0', fsType: 'devtmpfs', majorMinor: '0:5' });
  });

  it('unescapes paths, and lists stacked mounts bottom first', () => {
    const stacked = mountsAt(table, '/mnt/with space');
    expect(stacked.map((m) => m.mountOptions)).toEqual(['rw', 'ro']);
  });

  it('skips lines it cannot read instead of guessing', () => {
    expect(parseMountInfo('garbage\n1 2 3\n')).toEqual([]);
  });
});

describe('unescapeOctal', () => {
  it('decodes the four escapes the kernel writes', () => {
    expect(unescapeOctal('a\\040b\\011c\\012d\\134e')).toBe('a b\tc\nd\\e');
  });
});
