/**
 * The nbdfuse attacher's decisions that need no devices; test/attach.test.ts runs it for real.
 */
import { describe, expect, it } from 'vitest';
import { healthyDevice } from './nbdfuse-attacher.ts';
import type { NbdfuseProbe } from './nbdfuse-attacher.ts';
import { nbdfuseLayout } from './nbdfuse-layout.ts';

const live: NbdfuseProbe = {
  layout: nbdfuseLayout('/s', 'vm1'),
  state: undefined,
  fuseMounted: true,
  pid: 42,
  loops: ['/dev/loop3'],
  serving: true,
};

describe('healthyDevice', () => {
  it('is the loop device when every piece is live, with or without a record', () => {
    expect(healthyDevice(live)).toBe('/dev/loop3');
  });

  it.each([
    ['no FUSE mount', { fuseMounted: false }],
    ['no nbdfuse process', { pid: undefined }],
    ['nbdfuse alive but its reads fail (engine restarted)', { serving: false }],
    ['no loop device yet', { loops: [] }],
    ['two loop devices on one file', { loops: ['/dev/loop3', '/dev/loop4'] }],
  ] as [string, Partial<NbdfuseProbe>][])('is undefined with %s', (_what, change) => {
    expect(healthyDevice({ ...live, ...change })).toBeUndefined();
  });
});
