/**
 * Volume sizes from CSI capacity ranges. The engine allocates in 4 KiB blocks, so a size is
 * rounded up to a block; "required" is a floor and "limit" a ceiling, both optional (0 = unset).
 *
 *   limit < required (both set)           INVALID_ARGUMENT
 *   negative                              INVALID_ARGUMENT
 *   no size fits (e.g. limit < 4 KiB, or  OUT_OF_RANGE (the spec's "unsupported capacity")
 *   a clone's source is above the limit)
 *   beyond 2^53 - 1 bytes                 OUT_OF_RANGE; the engine refuses far smaller sizes
 *                                         with OUT_OF_RANGE too
 */
import { status } from '@grpc/grpc-js';
import type { CapacityRange } from './messages.ts';
import { int64ToBigInt, requestBytes } from './proto.ts';
import { CsiError } from './status.ts';

export const BLOCK_BYTES = 4096;

/** The size of a volume created without a capacity range (the spec lets the plugin choose). */
export const DEFAULT_VOLUME_SIZE_BYTES = 2 ** 30;

export interface SizeRange {
  /** 0 when unset. */
  requiredBytes: number;
  /** 0 when unset; a limit beyond 2^53 - 1 is kept as MAX_SAFE_INTEGER (it cannot bind). */
  limitBytes: number;
}

export const UNBOUNDED: SizeRange = { requiredBytes: 0, limitBytes: 0 };

export function parseCapacityRange(range: CapacityRange | null, field: string): SizeRange {
  if (range === null) return UNBOUNDED;
  const requiredBytes = requestBytes(range.requiredBytes, `${field}.required_bytes`);
  const limitBytes = limitOf(range.limitBytes, `${field}.limit_bytes`);
  if (limitBytes > 0 && limitBytes < requiredBytes) {
    throw new CsiError(status.INVALID_ARGUMENT, `${field}: limit_bytes ${limitBytes} is below required_bytes ${requiredBytes}`);
  }
  return { requiredBytes, limitBytes };
}

function limitOf(value: unknown, field: string): number {
  const n = int64ToBigInt(value, field);
  if (n < 0n) throw new CsiError(status.INVALID_ARGUMENT, `${field} must not be negative (got ${n})`);
  return n > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(n);
}

export function roundUpToBlock(bytes: number): number {
  return Math.ceil(bytes / BLOCK_BYTES) * BLOCK_BYTES;
}

function roundDownToBlock(bytes: number): number {
  return Math.floor(bytes / BLOCK_BYTES) * BLOCK_BYTES;
}

/**
 * The size to create: the required size rounded up to a block, at least `floorBytes` (a clone's
 * source size), DEFAULT_VOLUME_SIZE_BYTES (or the limit, if smaller) when nothing says more.
 */
export function resolveSize(range: SizeRange, floorBytes = 0): number {
  let size = Math.max(roundUpToBlock(range.requiredBytes), floorBytes);
  if (size === 0) size = range.limitBytes > 0 ? Math.min(DEFAULT_VOLUME_SIZE_BYTES, roundDownToBlock(range.limitBytes)) : DEFAULT_VOLUME_SIZE_BYTES;
  if (size === 0 || (range.limitBytes > 0 && size > range.limitBytes)) {
    const floor = floorBytes > 0 ? ` and the source's ${floorBytes} bytes` : '';
    throw new CsiError(status.OUT_OF_RANGE, `no size fits ${describe(range)}${floor} in whole ${BLOCK_BYTES}-byte blocks`);
  }
  if (size > Number.MAX_SAFE_INTEGER) throw new CsiError(status.OUT_OF_RANGE, `${size} bytes is beyond the largest supported size`);
  return size;
}

/** True when an existing volume of `sizeBytes` honours the range (for idempotent retries). */
export function sizeSatisfies(sizeBytes: number, range: SizeRange): boolean {
  return sizeBytes >= range.requiredBytes && (range.limitBytes === 0 || sizeBytes <= range.limitBytes);
}

export function describe(range: SizeRange): string {
  const required = range.requiredBytes > 0 ? `required ${range.requiredBytes}` : 'no required size';
  const limit = range.limitBytes > 0 ? `limit ${range.limitBytes}` : 'no limit';
  return `capacity range (${required}, ${limit})`;
}
