/**
 * Operating errors of the engine. Every error a client can cause or the disk can return is an
 * EngineError with a stable `code`; front ends map the code once (NBD errno in
 * engine/nbd/errno.ts, gRPC status in engine/api/status.ts) and never look at message text.
 * Programmer errors are not EngineErrors: they are assertion failures and crash loudly.
 */

export type EngineErrorCode =
  | 'INVALID_ARGUMENT' // malformed request: bad name, size, range or alignment
  | 'NOT_FOUND' // no such volume
  | 'ALREADY_EXISTS' // a volume of that name exists
  | 'OUT_OF_RANGE' // I/O beyond the end of a volume
  | 'NO_SPACE' // the pool is full
  | 'READ_ONLY' // write to a read-only export (snapshot) or a pool that turned read-only
  | 'BUSY' // the volume is in use (open connections) and cannot be removed now
  | 'FAILED_PRECONDITION' // the request is valid but not in this state (e.g. shrink)
  | 'IO_ERROR' // the storage failed; the pool may have turned read-only
  | 'CORRUPTION' // on-disk data failed its checksum
  | 'UNSUPPORTED_FORMAT'; // the pool was written by an unknown on-disk format version

export class EngineError extends Error {
  readonly code: EngineErrorCode;

  constructor(code: EngineErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EngineError';
    this.code = code;
  }
}

export function isEngineError(err: unknown): err is EngineError {
  return err instanceof EngineError;
}
