import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { asState, readState, removeState, statePath, writeState } from './state-file.ts';
import type { NbdfuseState, NbdState } from './state-file.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-state-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const fuse: NbdfuseState = {
  version: 1,
  kind: 'nbdfuse',
  exportName: 'vm1',
  socketPath: '/p/nbd.sock',
  mountDir: '/s/fuse-vm1',
  pid: 1234,
  loopDevice: '/dev/loop3',
};
const nbd: NbdState = { version: 1, kind: 'nbd', exportName: 'vm2', socketPath: '/p/nbd.sock', devicePath: '/dev/nbd0' };

describe('state file', () => {
  it('round-trips both kinds and leaves only NAME.json behind', async () => {
    await writeState(dir, fuse);
    await writeState(dir, nbd);
    expect(await readState(dir, 'vm1')).toEqual(fuse);
    expect(await readState(dir, 'vm2')).toEqual(nbd);
    expect((await readdir(dir)).sort()).toEqual(['vm1.json', 'vm2.json']);
  });

  it('replaces a record as a whole', async () => {
    await writeState(dir, { ...fuse, loopDevice: null });
    await writeState(dir, fuse);
    expect(await readState(dir, 'vm1')).toEqual(fuse);
  });

  it('is undefined when missing, and removing a missing record is fine', async () => {
    expect(await readState(dir, 'vm1')).toBeUndefined();
    await removeState(dir, 'vm1');
    await writeState(dir, fuse);
    await removeState(dir, 'vm1');
    expect(await readState(dir, 'vm1')).toBeUndefined();
  });

  it('refuses a file that is not JSON', async () => {
    await writeFile(statePath(dir, 'vm1'), '{"version": 1, "kind"');
    await expect(readState(dir, 'vm1')).rejects.toMatchObject({ code: 'STATE_CORRUPT' });
  });

  it('refuses a record of another export (a renamed or copied file)', async () => {
    await writeState(dir, fuse);
    await writeFile(statePath(dir, 'other'), await readFile(statePath(dir, 'vm1')));
    await expect(readState(dir, 'other')).rejects.toMatchObject({ code: 'STATE_CORRUPT' });
  });

  it('accepts only complete records of a known version', () => {
    expect(asState(fuse)).toEqual(fuse);
    expect(asState({ ...fuse, version: 2 })).toBeUndefined();
    expect(asState({ ...fuse, kind: 'iscsi' })).toBeUndefined();
    expect(asState({ ...fuse, pid: '1234' })).toBeUndefined();
    expect(asState({ ...fuse, pid: 1.5 })).toBeUndefined();
    expect(asState({ ...fuse, loopDevice: 7 })).toBeUndefined();
    expect(asState({ ...nbd, devicePath: undefined })).toBeUndefined();
    expect(asState(null)).toBeUndefined();
    expect(asState([])).toBeUndefined();
  });
});

describe('removeState', () => {
  it('is fine when the state directory does not exist at all', async () => {
    await removeState(join(dir, 'never-created'), 'vm1');
  });
});
