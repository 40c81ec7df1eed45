import { describe, expect, it } from 'vitest';
import { fakeExec } from '../attach/fake-exec.ts';
import { bindMount, majorMinorOf, mount, mountArgs, unmount } from './mount.ts';

describe('mountArgs', () => {
  it('passes type, options and paths as separate arguments', () => {
    expect(mountArgs('/dev/loop0', '/m', 'xfs', ['nouuid', 'noatime'])).toEqual(['-t', 'xfs', '-o', 'nouuid,noatime', '/dev/loop0', '/m']);
    expect(mountArgs('/dev/loop0', '/m', 'ext4', [])).toEqual(['-t', 'ext4', '/dev/loop0', '/m']);
  });
});

describe('majorMinorOf', () => {
  it('decodes glibc dev_t numbers as the mount table writes them', () => {
    expect(majorMinorOf(0x0700)).toBe('7:0'); // /dev/loop0
    expect(majorMinorOf(0x0703)).toBe('7:3');
    expect(majorMinorOf(0x2b00)).toBe('43:0'); // /dev/nbd0
    expect(majorMinorOf(0x100703)).toBe('7:259'); // minor > 255: gnu_dev_makedev(7, 259)
    expect(majorMinorOf(259 * 256 + 1)).toBe('259:1'); // nvme partition
  });
});

describe('paths', () => {
  it('refuses relative paths before running anything', async () => {
    const exec = fakeExec(() => '');
    await expect(mount('/dev/loop0', 'rel', 'ext4', [], exec)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(bindMount('dev/loop0', '/t', { readOnly: false }, exec)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(unmount('t', exec)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(exec.calls).toEqual([]);
  });

  it('refuses a bind source that does not exist', async () => {
    await expect(bindMount('/nonexistent/braid', '/tmp/braid-never', { readOnly: false }, fakeExec(() => ''))).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });

  it('unmounting a path that is not mounted, or missing, is fine and runs nothing', async () => {
    const exec = fakeExec(() => '');
    await unmount('/nonexistent/braid', exec);
    await unmount('/tmp', exec);
    expect(exec.calls).toEqual([]);
  });
});
