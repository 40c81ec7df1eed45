/**
 * Operating errors of attaching and detaching. Each has a stable `code`, which the CSI node
 * service maps once to a gRPC status (and the CLI prints as one line); nobody reads the message
 * to decide anything. A failing system tool stays reachable as `cause` (an ExecError with its
 * exit code and stderr).
 */

export type AttachErrorCode =
  | 'INVALID_ARGUMENT' // an export name that cannot be used safely in a path or URI
  | 'NOT_SUPPORTED' // this attacher cannot work on this machine (no nbd module, no tool)
  | 'NOT_ATTACHED' // the operation needs an attached export and there is none
  | 'DEVICE_BUSY' // the device is mounted, held or open, so it cannot be detached now
  | 'NO_FREE_DEVICE' // every /dev/nbdX is taken
  | 'ONLINE_RESIZE_UNSUPPORTED' // the export grew but the device can only see it after a re-attach
  | 'STATE_CORRUPT' // an attach state file that is not ours or not readable as JSON
  | 'ATTACH_FAILED'; // a step of attach or detach failed: see `cause`

export class AttachError extends Error {
  readonly code: AttachErrorCode;

  constructor(code: AttachErrorCode, message: string, options?: { cause?: unknown }) {
    // The cause's message is appended, so the one line a user sees says what actually failed.
    super(options?.cause instanceof Error ? `${message}: ${options.cause.message}` : message, options);
    this.name = 'AttachError';
    this.code = code;
  }
}
