import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NodeState, recordFileName } from './node-state.ts';
import type { StagedVolume } from './node-state.ts';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-node-state-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const record: StagedVolume = {
  version: 1,
  volumeId: 'vol1',
  exportName: 'vol1',
  socketPath: '/run/braid/nbd.sock',
  stagingPath: '/staging/vol1',
  accessType: 'mount',
  fsType: 'xfs',
  mountFlags: ['noatime'],
  readOnly: false,
  devicePath: '/dev/loop3',
  published: [{ targetPath: '/pods/p/vol1', readOnly: true }],
};

describe('recordFileName', () => {
  it('keeps safe IDs readable and hashes the rest behind a character no safe ID starts with', () => {
    expect(recordFileName('pvc-1234')).toBe('pvc-1234.json');
    expect(recordFileName('../../etc/passwd')).toMatch(/^_[0-9a-f]{64}\.json$/);
    expect(recordFileName('a'.repeat(200))).toMatch(/^_[0-9a-f]{64}\.json$/);
  });
});

describe('NodeState', () => {
  it('round-trips a record, leaves no temporary file, and forgets it on remove', async () => {
    const state = new NodeState(join(dir, 'volumes'));
    expect(await state.read('vol1')).toBeUndefined();
    await state.write(record);
    expect(await state.read('vol1')).toEqual(record);
    expect(await readdir(join(dir, 'volumes'))).toEqual(['vol1.json']);
    await state.remove('vol1');
    await state.remove('vol1');
    expect(await state.read('vol1')).toBeUndefined();
  });

  it('refuses a record that is malformed or of another volume rather than act on it', async () => {
    const state = new NodeState(dir);
    await writeFile(join(dir, 'vol1.json'), JSON.stringify({ ...record, accessType: 'nfs' }));
    await expect(state.read('vol1')).rejects.toThrow(/not a node record/);
    await writeFile(join(dir, 'vol1.json'), JSON.stringify({ ...record, volumeId: 'vol2' }));
    await expect(state.read('vol1')).rejects.toThrow(/not a node record/);
  });
});
