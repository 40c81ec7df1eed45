import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { parseVolumeParameters } from './parameters.ts';

const codeOf = (f: () => unknown): number | undefined => {
  try {
    f();
    return undefined;
  } catch (err) {
    return (err as { code?: number }).code;
  }
};

describe('volume parameters', () => {
  it('defaults to no dedup, in the pool-wide domain', () => {
    expect(parseVolumeParameters({})).toEqual({ dedup: false, dedupDomain: '' });
    expect(parseVolumeParameters({ dedup: 'true' })).toEqual({ dedup: true, dedupDomain: '' });
  });

  it('a dedup domain implies dedup and must be a valid name', () => {
    expect(parseVolumeParameters({ dedupDomain: 'tenant-a' })).toEqual({ dedup: true, dedupDomain: 'tenant-a' });
    expect(codeOf(() => parseVolumeParameters({ dedupDomain: '../etc' }))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => parseVolumeParameters({ dedupDomain: 'Tenant' }))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => parseVolumeParameters({ dedupDomain: 'a', dedup: 'false' }))).toBe(status.INVALID_ARGUMENT);
  });

  it('unknown keys are refused, sidecar metadata is ignored', () => {
    expect(codeOf(() => parseVolumeParameters({ dedupe: 'true' }))).toBe(status.INVALID_ARGUMENT);
    expect(parseVolumeParameters({ 'csi.storage.k8s.io/pvc/name': 'x' }).dedup).toBe(false);
  });
});
