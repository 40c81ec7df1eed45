import { describe, expect, it } from 'vitest';
import { exitError, fakeExec } from '../attach/fake-exec.ts';
import { blkidArgs, deviceSizeBytes, formatIfNeeded, growCommand, mkfsCommand, parseBlkidExport } from './filesystem.ts';

const EXT4 = 'DEVNAME=/dev/loop0\nUUID=1c70\nVERSION=1.0\nBLOCK_SIZE=1024\nTYPE=ext4\nUSAGE=filesystem\n';
const XFS = 'DEVNAME=/dev/loop0\nUUID=9a\nTYPE=xfs\nUSAGE=filesystem\n';
const GPT = 'DEVNAME=/dev/loop0\nPTUUID=ab\nPTTYPE=gpt\n';

describe('parseBlkidExport', () => {
  it('reads a filesystem', () => {
    expect(parseBlkidExport(EXT4)).toEqual({ kind: 'filesystem', fsType: 'ext4' });
  });

  it('reads anything else as other content', () => {
    expect(parseBlkidExport(GPT)).toEqual({ kind: 'other', description: 'a gpt partition table' });
    expect(parseBlkidExport('TYPE=LVM2_member\nUSAGE=raid\n')).toEqual({ kind: 'other', description: 'LVM2_member' });
  });
});

describe('formatIfNeeded', () => {
  it('formats a device on which blkid finds nothing (exit 2)', async () => {
    const exec = fakeExec((file, args) => (file === 'blkid' ? exitError(file, args, 2) : ''));
    expect(await formatIfNeeded('/dev/loop0', 'ext4', exec)).toEqual({ formatted: true });
    expect(exec.calls).toEqual([
      { file: 'blkid', args: blkidArgs('/dev/loop0') },
      { file: 'mkfs.ext4', args: ['-q', '-E', 'nodiscard', '/dev/loop0'] },
    ]);
  });

  it('leaves a device that already has the filesystem alone', async () => {
    const exec = fakeExec(() => XFS);
    expect(await formatIfNeeded('/dev/loop0', 'xfs', exec)).toEqual({ formatted: false });
    expect(exec.calls.map((c) => c.file)).toEqual(['blkid']);
  });

  it('never reformats another filesystem', async () => {
    const exec = fakeExec(() => EXT4);
    await expect(formatIfNeeded('/dev/loop0', 'xfs', exec)).rejects.toMatchObject({ code: 'FS_MISMATCH' });
    expect(exec.calls.map((c) => c.file)).toEqual(['blkid']);
  });

  it('never formats over a partition table or an ambivalent probe (exit 8)', async () => {
    await expect(formatIfNeeded('/dev/loop0', 'ext4', fakeExec(() => GPT))).rejects.toMatchObject({ code: 'UNKNOWN_CONTENT' });
    const ambivalent = fakeExec((f, a) => exitError(f, a, 8));
    await expect(formatIfNeeded('/dev/loop0', 'ext4', ambivalent)).rejects.toMatchObject({ code: 'UNKNOWN_CONTENT' });
    expect(ambivalent.calls).toHaveLength(1);
  });

  it('reports a failing blkid instead of formatting', async () => {
    const exec = fakeExec((f, a) => exitError(f, a, 4, 'usage'));
    await expect(formatIfNeeded('/dev/loop0', 'ext4', exec)).rejects.toMatchObject({ code: 'MOUNT_FAILED' });
    expect(exec.calls).toHaveLength(1);
  });
});

describe('commands', () => {
  it('mkfs without discard, and without force for xfs', () => {
    expect(mkfsCommand('/dev/x', 'ext4')).toEqual({ file: 'mkfs.ext4', args: ['-q', '-E', 'nodiscard', '/dev/x'] });
    expect(mkfsCommand('/dev/x', 'xfs')).toEqual({ file: 'mkfs.xfs', args: ['-q', '-K', '/dev/x'] });
  });

  it('grows ext4 by device and xfs by mount point', () => {
    expect(growCommand('ext4', '/dev/x', '/m')).toEqual({ file: 'resize2fs', args: ['/dev/x'] });
    expect(growCommand('xfs', '/dev/x', '/m')).toEqual({ file: 'xfs_growfs', args: ['/m'] });
  });

  it('reads blockdev --getsize64, and refuses anything but a number', async () => {
    expect(await deviceSizeBytes('/dev/x', fakeExec(() => '268435456\n'))).toBe(268435456);
    await expect(deviceSizeBytes('/dev/x', fakeExec(() => 'oops'))).rejects.toMatchObject({ code: 'MOUNT_FAILED' });
  });
});
