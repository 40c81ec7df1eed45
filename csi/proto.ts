/**
 * The CSI wire schema: loads csi/proto/csi.proto at run time (no generated code) and exposes the
 * three service definitions plus the few conversions every handler needs.
 *
 * Invariant: 64-bit integers never pass through a double on the wire side. proto-loader decodes
 * int64 fields as decimal strings (`longs: String`), and the conversion to `number` happens here
 * once, refusing anything that is not a safe integer, so no size is ever silently rounded.
 * Message shapes (TypeScript) live in csi/messages.ts.
 */
import { fileURLToPath } from 'node:url';
import * as protoLoader from '@grpc/proto-loader';
import { status } from '@grpc/grpc-js';
import type { ServiceDefinition } from '@grpc/grpc-js';
import { CsiError } from './status.ts';
import type { Timestamp, WireInt64 } from './messages.ts';

export const CSI_PROTO_PATH = fileURLToPath(new URL('./proto/csi.proto', import.meta.url));

/** The options every loader of csi.proto uses (the server here, test clients elsewhere). */
export const CSI_PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false, // volume_id on the wire is volumeId here
  longs: String, // exact 64-bit values; see int64ToBigInt
  enums: String, // enum values by name, as the spec writes them
  defaults: true, // absent scalars decode to their proto3 default; absent messages to null
  oneofs: true, // a oneof's set member is named in a virtual field (e.g. accessType)
};

export const csiPackageDefinition = protoLoader.loadSync(CSI_PROTO_PATH, CSI_PROTO_LOADER_OPTIONS);

export type CsiServiceName = 'Identity' | 'Controller' | 'Node';

export function csiService(name: CsiServiceName): ServiceDefinition {
  const service = csiPackageDefinition[`csi.v1.${name}`];
  if (service === undefined) throw new Error(`csi.proto has no service csi.v1.${name}`);
  return service as ServiceDefinition;
}

/**
 * An int64 field of a request as a bigint. proto-loader hands us a decimal string; a client that
 * built the message itself may have used a number. Anything else is a malformed request.
 */
export function int64ToBigInt(value: unknown, field: string): bigint {
  if (typeof value === 'string' && /^-?\d{1,20}$/.test(value)) return BigInt(value);
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  throw new CsiError(status.INVALID_ARGUMENT, `${field} is not a 64-bit integer: ${String(value)}`);
}

/**
 * A byte count from a request: INVALID_ARGUMENT when negative, OUT_OF_RANGE when it cannot be
 * represented exactly (above 2^53 - 1 bytes, far beyond any volume Braid can create).
 */
export function requestBytes(value: unknown, field: string): number {
  const n = int64ToBigInt(value, field);
  if (n < 0n) throw new CsiError(status.INVALID_ARGUMENT, `${field} must not be negative (got ${n})`);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CsiError(status.OUT_OF_RANGE, `${field} of ${n} bytes is beyond the largest supported size`);
  }
  return Number(n);
}

/** A number we produced, as an int64 field. Our numbers are safe integers by construction. */
export function toWireInt64(value: number): WireInt64 {
  if (!Number.isSafeInteger(value)) throw new Error(`not a safe integer: ${value}`);
  return String(value);
}

/** Milliseconds since the epoch as a google.protobuf.Timestamp. */
export function toTimestamp(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return { seconds: toWireInt64(seconds), nanos: (ms - seconds * 1000) * 1_000_000 };
}
