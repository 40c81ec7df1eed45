import { describe, expect, it } from 'vitest';
import { blockReadOnly, checkStageCompatible, mountOptions, newRecord, publishReadOnly, withTarget, withoutTarget } from './node-rules.ts';
import type { StageSpec } from './node-requests.ts';
import { statusName, toCsiStatus } from './status.ts';

const spec: StageSpec = {
  volumeId: 'vol1',
  stagingPath: '/staging',
  exportName: 'vol1',
  socketPath: '/run/nbd.sock',
  accessType: 'mount',
  fsType: 'ext4',
  fsTypeGiven: false,
  mountFlags: ['noatime', 'discard'],
  readOnlyMode: false,
};

function codeOf(fn: () => void): string {
  try {
    fn();
  } catch (err) {
    return statusName(toCsiStatus(err).error.code);
  }
  return 'OK';
}

describe('checkStageCompatible', () => {
  const record = newRecord(spec);
  it('accepts the same request, mount flags in any order', () => {
    expect(codeOf(() => checkStageCompatible(record, { ...spec, mountFlags: ['discard', 'noatime'] }))).toBe('OK');
  });
  it.each([
    ['another filesystem', { fsType: 'xfs' as const }],
    ['block', { accessType: 'block' as const, fsType: null }],
    ['other flags', { mountFlags: ['noatime'] }],
    ['a read-only mode', { readOnlyMode: true }],
    ['another export', { exportName: 'vol2' }],
  ])('answers ALREADY_EXISTS for %s', (_what, change) => {
    expect(codeOf(() => checkStageCompatible(record, { ...spec, ...change }))).toBe('ALREADY_EXISTS');
  });
  it('answers FAILED_PRECONDITION for another staging path', () => {
    expect(codeOf(() => checkStageCompatible(record, { ...spec, stagingPath: '/other' }))).toBe('FAILED_PRECONDITION');
  });
});

describe('mountOptions', () => {
  it('adds nouuid for xfs and ro for a read-only mode, once', () => {
    expect(mountOptions(newRecord(spec))).toEqual(['noatime', 'discard']);
    expect(mountOptions(newRecord({ ...spec, fsType: 'xfs', mountFlags: ['nouuid'], readOnlyMode: true }))).toEqual(['nouuid', 'ro']);
  });
});

describe('blockReadOnly', () => {
  it('is read-only when staged so, or when every publish is read-only', () => {
    const base = newRecord({ ...spec, accessType: 'block', fsType: null });
    expect(blockReadOnly(base)).toBe(false);
    expect(blockReadOnly({ ...base, readOnly: true })).toBe(true);
    const ro = withTarget(base, '/t1', true);
    expect(blockReadOnly(ro)).toBe(true);
    const mixed = withTarget(ro, '/t2', false);
    expect(blockReadOnly(mixed)).toBe(false);
    expect(blockReadOnly(withoutTarget(mixed, '/t2'))).toBe(true);
    expect(withTarget(withTarget(base, '/t1', false), '/t1', true).published).toEqual([{ targetPath: '/t1', readOnly: true }]);
  });
});

describe('publishReadOnly', () => {
  it('is read-only when asked, or when the staging mount is', () => {
    const rw = newRecord(spec);
    expect(publishReadOnly(rw, false)).toBe(false);
    expect(publishReadOnly(rw, true)).toBe(true);
    expect(publishReadOnly(newRecord({ ...spec, readOnlyMode: true }), false)).toBe(true);
    expect(publishReadOnly(newRecord({ ...spec, mountFlags: ['ro'] }), false)).toBe(true);
  });
});
