/**
 * Operating errors of the filesystem and mount helpers, with stable codes that the CSI node
 * service maps once to gRPC statuses. A failing tool stays reachable as `cause` (ExecError).
 */

export type MountErrorCode =
  | 'INVALID_ARGUMENT' // a relative path, an unknown filesystem type, a missing source
  | 'FS_MISMATCH' // the device holds another filesystem than asked for: never reformatted
  | 'UNKNOWN_CONTENT' // the device holds something that is not a filesystem we format over
  | 'MOUNT_CONFLICT' // the target is already a mount point of something else
  | 'NOT_MOUNTED' // the operation needs a mounted filesystem at the path
  | 'MOUNT_FAILED'; // a tool failed: see `cause`

export class MountError extends Error {
  readonly code: MountErrorCode;

  constructor(code: MountErrorCode, message: string, options?: { cause?: unknown }) {
    // The cause's message is appended, so the one line a user sees says what actually failed.
    super(options?.cause instanceof Error ? `${message}: ${options.cause.message}` : message, options);
    this.name = 'MountError';
    this.code = code;
  }
}
