import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { DEFAULT_VOLUME_SIZE_BYTES, parseCapacityRange, resolveSize, sizeSatisfies, UNBOUNDED } from './capacity.ts';
import { int64ToBigInt, requestBytes, toTimestamp } from './proto.ts';
import { CsiError } from './status.ts';

function codeOf(fn: () => unknown): status | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof CsiError) return err.code;
    throw err;
  }
  return undefined;
}

const r = (requiredBytes: string | number, limitBytes: string | number = '0') =>
  parseCapacityRange({ requiredBytes: String(requiredBytes), limitBytes: String(limitBytes) }, 'capacity_range');

describe('capacity ranges', () => {
  it('rounds the required size up to 4 KiB', () => {
    expect(resolveSize(r(1))).toBe(4096);
    expect(resolveSize(r(4096))).toBe(4096);
    expect(resolveSize(r(4097))).toBe(8192);
  });

  it('uses the default size without a range, or the limit when it is smaller', () => {
    expect(resolveSize(UNBOUNDED)).toBe(DEFAULT_VOLUME_SIZE_BYTES);
    expect(resolveSize(r(0, 10_000))).toBe(8192);
    expect(resolveSize(r(0, 2 * DEFAULT_VOLUME_SIZE_BYTES))).toBe(DEFAULT_VOLUME_SIZE_BYTES);
  });

  it('grows to a clone source and refuses a limit below it', () => {
    expect(resolveSize(r(4096), 1 << 20)).toBe(1 << 20);
    expect(resolveSize(UNBOUNDED, 1 << 20)).toBe(1 << 20);
    expect(codeOf(() => resolveSize(r(4096, 8192), 1 << 20))).toBe(status.OUT_OF_RANGE);
  });

  it('refuses ranges no whole block fits', () => {
    expect(codeOf(() => resolveSize(r(1000, 1000)))).toBe(status.OUT_OF_RANGE);
    expect(codeOf(() => resolveSize(r(0, 100)))).toBe(status.OUT_OF_RANGE);
  });

  it('refuses malformed ranges', () => {
    expect(codeOf(() => r(2, 1))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => r(-1))).toBe(status.INVALID_ARGUMENT);
    expect(codeOf(() => r(0, -1))).toBe(status.INVALID_ARGUMENT);
  });

  it('keeps int64 sizes exact: beyond 2^53 - 1 is OUT_OF_RANGE for a size, no limit for a limit', () => {
    expect(codeOf(() => r('9223372036854775807'))).toBe(status.OUT_OF_RANGE);
    expect(r(4096, '9223372036854775807').limitBytes).toBe(Number.MAX_SAFE_INTEGER);
    expect(codeOf(() => resolveSize(r(Number.MAX_SAFE_INTEGER)))).toBe(status.OUT_OF_RANGE);
    expect(requestBytes('9007199254740991', 'x')).toBe(Number.MAX_SAFE_INTEGER);
    expect(int64ToBigInt('-9223372036854775808', 'x')).toBe(-(2n ** 63n));
    expect(codeOf(() => int64ToBigInt('12abc', 'x'))).toBe(status.INVALID_ARGUMENT);
  });

  it('tells whether an existing size honours a range', () => {
    expect(sizeSatisfies(8192, r(5000))).toBe(true);
    expect(sizeSatisfies(8192, r(8193))).toBe(false);
    expect(sizeSatisfies(8192, r(0, 8191))).toBe(false);
    expect(sizeSatisfies(8192, UNBOUNDED)).toBe(true);
  });

  it('converts milliseconds to a protobuf Timestamp', () => {
    expect(toTimestamp(1_700_000_000_123)).toEqual({ seconds: '1700000000', nanos: 123_000_000 });
  });
});
