/**
 * The one place where errors become CSI status codes. Handlers throw; the server wrapper
 * (csi/server.ts) calls toCsiStatus once per failed call. Three kinds of error exist:
 *
 * - CsiError: a handler decided the status itself (validation, ABORTED on a lock, ...). It
 *   passes through unchanged.
 * - EngineError: the engine refused, with a stable code. Mapped by code, never by message:
 *
 *     engine code          CSI status             why
 *     INVALID_ARGUMENT     INVALID_ARGUMENT
 *     NOT_FOUND            NOT_FOUND
 *     ALREADY_EXISTS       ALREADY_EXISTS
 *     OUT_OF_RANGE         OUT_OF_RANGE           the spec's "unsupported capacity"
 *     NO_SPACE             RESOURCE_EXHAUSTED     the spec's "out of capacity"
 *     BUSY                 FAILED_PRECONDITION    the spec's "volume in use"
 *     READ_ONLY            FAILED_PRECONDITION    valid request, but the pool refuses writes
 *     FAILED_PRECONDITION  FAILED_PRECONDITION    includes "engine not running"
 *     UNSUPPORTED_FORMAT   FAILED_PRECONDITION    the pool needs another engine version
 *     IO_ERROR             INTERNAL               the disk failed; the caller cannot fix it
 *     CORRUPTION           DATA_LOSS              gRPC's code for unrecoverable data loss
 *
 * - anything else: a bug or an unexpected failure (engine API deadline, wire format): INTERNAL,
 *   and the wrapper logs it with its stack.
 */
import { status } from '@grpc/grpc-js';
import type { ServerErrorResponse } from '@grpc/grpc-js';
import { grpcStatusOf } from '../engine/api/status.ts';
import { EngineError } from '../engine/errors.ts';
import type { EngineErrorCode } from '../engine/errors.ts';

/** An error that already carries its CSI status. */
export class CsiError extends Error {
  readonly code: status;

  constructor(code: status, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CsiError';
    this.code = code;
  }
}

/** The engine API's mapping, used unchanged: one table for every gRPC face of Braid. */
export const csiStatusOfEngineCode: (code: EngineErrorCode) => status = grpcStatusOf;

export interface CsiStatus {
  /** What grpc-js sends: `code` and `details` (the spec's status message). */
  error: ServerErrorResponse & { code: status };
  /** True for a bug or an unexpected failure: the caller logs it loudly. */
  internal: boolean;
}

export function toCsiStatus(err: unknown): CsiStatus {
  if (err instanceof CsiError) return { error: statusError(err.code, err.message), internal: false };
  if (err instanceof EngineError) {
    const code = csiStatusOfEngineCode(err.code);
    return { error: statusError(code, err.message), internal: code === status.INTERNAL };
  }
  const message = `internal error: ${err instanceof Error ? err.message : String(err)}`;
  return { error: statusError(status.INTERNAL, message), internal: true };
}

function statusError(code: status, message: string): ServerErrorResponse & { code: status } {
  return Object.assign(new Error(message), { code, details: message });
}

/** The spec names codes (NOT_FOUND); logs and tests should too. */
export function statusName(code: status): string {
  return status[code] ?? `CODE_${code}`;
}
