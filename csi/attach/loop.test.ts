import { describe, expect, it } from 'vitest';
import { LOOP_LIST_ARGS, loopAttachArgs, loopDetachArgs, parseLoopList } from './loop.ts';

describe('losetup commands', () => {
  it('attaches to the first free device, buffered, never a second device on the same file', () => {
    expect(loopAttachArgs('/s/fuse-vm1/nbd')).toEqual(['--show', '--direct-io=off', '--nooverlap', '--find', '/s/fuse-vm1/nbd']);
  });

  it('attaches to a preferred device when asked', () => {
    expect(loopAttachArgs('/s/fuse-vm1/nbd', '/dev/loop4')).toEqual(['--show', '--direct-io=off', '--nooverlap', '/dev/loop4', '/s/fuse-vm1/nbd']);
  });

  it('detaches and lists', () => {
    expect(loopDetachArgs('/dev/loop4')).toEqual(['--detach', '/dev/loop4']);
    expect(LOOP_LIST_ARGS).toEqual(['--json', '--list', '--output', 'NAME,BACK-FILE']);
  });
});

describe('parseLoopList', () => {
  it('reads losetup --json output', () => {
    const out = `{
   "loopdevices": [
      {"name": "/dev/loop0", "back-file": "/s/fuse-vm1/nbd"},
      {"name": "/dev/loop1", "back-file": "/var/img with space (deleted)"}
   ]
}`;
    expect(parseLoopList(out)).toEqual([
      { name: '/dev/loop0', backingFile: '/s/fuse-vm1/nbd' },
      { name: '/dev/loop1', backingFile: '/var/img with space' },
    ]);
  });

  it('reads an empty list, in both forms losetup prints it', () => {
    expect(parseLoopList('{\n   "loopdevices": [\n\n   ]\n}\n')).toEqual([]);
    expect(parseLoopList('')).toEqual([]);
  });
});
