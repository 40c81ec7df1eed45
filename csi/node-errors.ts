/**
 * The attachers' and mount helpers' error codes as CSI statuses, decided once, here, by code.
 * The server's one mapping (status.ts) knows CsiError and EngineError; the Node service passes
 * every error through `nodeError` first, so that operating conditions get their status and
 * only real failures (a tool that failed, a corrupt record) reach the server as they are,
 * where they become INTERNAL and are logged with their stack.
 *
 *   AttachError INVALID_ARGUMENT           INVALID_ARGUMENT    an export name we cannot use
 *   AttachError NOT_SUPPORTED              FAILED_PRECONDITION this node cannot attach (no tool)
 *   AttachError NOT_ATTACHED               FAILED_PRECONDITION
 *   AttachError DEVICE_BUSY                FAILED_PRECONDITION the spec's "volume in use"
 *   AttachError ONLINE_RESIZE_UNSUPPORTED  FAILED_PRECONDITION expansion needs the device unused
 *   AttachError NO_FREE_DEVICE             RESOURCE_EXHAUSTED
 *   MountError  INVALID_ARGUMENT           INVALID_ARGUMENT    a relative path
 *   MountError  FS_MISMATCH                FAILED_PRECONDITION another filesystem: never reformatted
 *   MountError  UNKNOWN_CONTENT            FAILED_PRECONDITION a partition table, RAID member, ...
 *   MountError  NOT_MOUNTED                FAILED_PRECONDITION
 *   MountError  MOUNT_CONFLICT             ALREADY_EXISTS      the spec's "published but incompatible"
 *   ATTACH_FAILED, STATE_CORRUPT, MOUNT_FAILED: unchanged (INTERNAL)
 */
import { status } from '@grpc/grpc-js';
import { AttachError } from './attach/errors.ts';
import type { AttachErrorCode } from './attach/errors.ts';
import { MountError } from './mount/errors.ts';
import type { MountErrorCode } from './mount/errors.ts';
import { CsiError } from './status.ts';

const ATTACH_STATUS: Readonly<Record<AttachErrorCode, status | undefined>> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  NOT_SUPPORTED: status.FAILED_PRECONDITION,
  NOT_ATTACHED: status.FAILED_PRECONDITION,
  DEVICE_BUSY: status.FAILED_PRECONDITION,
  ONLINE_RESIZE_UNSUPPORTED: status.FAILED_PRECONDITION,
  NO_FREE_DEVICE: status.RESOURCE_EXHAUSTED,
  STATE_CORRUPT: undefined,
  ATTACH_FAILED: undefined,
};

const MOUNT_STATUS: Readonly<Record<MountErrorCode, status | undefined>> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  FS_MISMATCH: status.FAILED_PRECONDITION,
  UNKNOWN_CONTENT: status.FAILED_PRECONDITION,
  NOT_MOUNTED: status.FAILED_PRECONDITION,
  MOUNT_CONFLICT: status.ALREADY_EXISTS,
  MOUNT_FAILED: undefined,
};

/** `err` as a CsiError when it is an operating condition with a CSI status; otherwise `err` itself. */
export function nodeError(err: unknown): unknown {
  const code = err instanceof AttachError ? ATTACH_STATUS[err.code] : err instanceof MountError ? MOUNT_STATUS[err.code] : undefined;
  if (code === undefined) return err;
  return new CsiError(code, (err as Error).message, { cause: err });
}

/** Runs `operation`, translating its errors with nodeError. */
export async function mapNodeErrors<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (err) {
    throw nodeError(err);
  }
}
