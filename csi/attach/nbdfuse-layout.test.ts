import { describe, expect, it } from 'vitest';
import { isNbdfuseFor, nbdfuseArgs, nbdfuseLayout } from './nbdfuse-layout.ts';

describe('nbdfuse layout', () => {
  it('keeps everything of one export under the state directory, with absolute paths', () => {
    const layout = nbdfuseLayout('/var/lib/braid/attach/', 'vm1');
    expect(layout).toEqual({
      exportName: 'vm1',
      stateDir: '/var/lib/braid/attach',
      mountDir: '/var/lib/braid/attach/fuse-vm1',
      backingFile: '/var/lib/braid/attach/fuse-vm1/nbd',
      pidFile: '/var/lib/braid/attach/vm1.nbdfuse.pid',
      logFile: '/var/lib/braid/attach/vm1.nbdfuse.log',
    });
    expect(nbdfuseLayout('rel', 'vm1').mountDir).toBe(`${process.cwd()}/rel/fuse-vm1`);
  });

  it('runs nbdfuse with a pid file, the mount point and the URI', () => {
    const layout = nbdfuseLayout('/s', 'vm1');
    expect(nbdfuseArgs(layout, 'nbd+unix:///vm1?socket=/p/nbd.sock')).toEqual([
      '-P',
      '/s/vm1.nbdfuse.pid',
      '/s/fuse-vm1',
      'nbd+unix:///vm1?socket=/p/nbd.sock',
    ]);
  });

  it('recognises its nbdfuse process by program and mount point', () => {
    expect(isNbdfuseFor(['nbdfuse', '-P', '/s/vm1.nbdfuse.pid', '/s/fuse-vm1', 'uri'], '/s/fuse-vm1')).toBe(true);
    expect(isNbdfuseFor(['/usr/bin/nbdfuse', '/s/fuse-vm1', 'uri'], '/s/fuse-vm1')).toBe(true);
    expect(isNbdfuseFor(['nbdfuse', '/s/fuse-vm10', 'uri'], '/s/fuse-vm1')).toBe(false);
    expect(isNbdfuseFor(['vim', '/s/fuse-vm1'], '/s/fuse-vm1')).toBe(false);
    expect(isNbdfuseFor([], '/s/fuse-vm1')).toBe(false);
  });
});
