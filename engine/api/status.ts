/**
 * The one mapping between EngineError codes and gRPC status codes, in both directions.
 *
 * Server side: an EngineError becomes the gRPC code below, its message becomes the status
 * details, and its exact engine code travels in the trailing metadata key `braid-error-code`,
 * because the mapping is not one-to-one (BUSY, READ_ONLY and FAILED_PRECONDITION all become
 * FAILED_PRECONDITION). Anything that is not an EngineError is a bug or an unexpected failure:
 * it becomes INTERNAL and the caller logs it.
 *
 * Client side: the metadata code wins when it names a known engine code; otherwise (another
 * server, or a status produced by gRPC itself) the gRPC code is mapped back where the meaning is
 * unambiguous. Nothing here ever looks at message text.
 *
 *   engine code          gRPC status            why
 *   INVALID_ARGUMENT     INVALID_ARGUMENT
 *   NOT_FOUND            NOT_FOUND
 *   ALREADY_EXISTS       ALREADY_EXISTS
 *   OUT_OF_RANGE         OUT_OF_RANGE
 *   NO_SPACE             RESOURCE_EXHAUSTED     CSI's code for "out of capacity"
 *   READ_ONLY            FAILED_PRECONDITION    valid request, but the pool/export refuses writes
 *   BUSY                 FAILED_PRECONDITION    CSI's code for "volume in use"; retry after detach
 *   FAILED_PRECONDITION  FAILED_PRECONDITION
 *   IO_ERROR             INTERNAL               the storage failed; not retryable by the caller
 *   CORRUPTION           DATA_LOSS              gRPC's code for unrecoverable corruption
 *   UNSUPPORTED_FORMAT   FAILED_PRECONDITION    the pool needs another engine version
 */
import { Metadata, status } from '@grpc/grpc-js';
import type { ServerErrorResponse, ServiceError } from '@grpc/grpc-js';
import { EngineError } from '../errors.ts';
import type { EngineErrorCode } from '../errors.ts';

export const ERROR_CODE_METADATA_KEY = 'braid-error-code';

export function grpcStatusOf(code: EngineErrorCode): status {
  switch (code) {
    case 'INVALID_ARGUMENT':
      return status.INVALID_ARGUMENT;
    case 'NOT_FOUND':
      return status.NOT_FOUND;
    case 'ALREADY_EXISTS':
      return status.ALREADY_EXISTS;
    case 'OUT_OF_RANGE':
      return status.OUT_OF_RANGE;
    case 'NO_SPACE':
      return status.RESOURCE_EXHAUSTED;
    case 'READ_ONLY':
    case 'BUSY':
    case 'FAILED_PRECONDITION':
    case 'UNSUPPORTED_FORMAT':
      return status.FAILED_PRECONDITION;
    case 'IO_ERROR':
      return status.INTERNAL;
    case 'CORRUPTION':
      return status.DATA_LOSS;
    default: {
      const unreachable: never = code;
      throw new Error(`unmapped engine error code ${String(unreachable)}`);
    }
  }
}

/** Every engine code, so the client can tell a known code in metadata from anything else. */
const ENGINE_ERROR_CODES: ReadonlySet<string> = new Set<EngineErrorCode>([
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'OUT_OF_RANGE',
  'NO_SPACE',
  'READ_ONLY',
  'BUSY',
  'FAILED_PRECONDITION',
  'IO_ERROR',
  'CORRUPTION',
  'UNSUPPORTED_FORMAT',
]);

function isEngineErrorCode(value: string): value is EngineErrorCode {
  return ENGINE_ERROR_CODES.has(value);
}

/** The status a handler answers with for `err`. `internal` tells the caller to log it loudly. */
export function toStatusError(err: unknown): { error: ServerErrorResponse; internal: boolean } {
  if (err instanceof EngineError) {
    const metadata = new Metadata();
    metadata.set(ERROR_CODE_METADATA_KEY, err.code);
    const error = Object.assign(new Error(err.message), { code: grpcStatusOf(err.code), details: err.message, metadata });
    return { error, internal: false };
  }
  const message = `internal error: ${err instanceof Error ? err.message : String(err)}`;
  return { error: Object.assign(new Error(message), { code: status.INTERNAL, details: message }), internal: true };
}

/** The gRPC code that maps back to an engine code without metadata, where it is unambiguous. */
function engineCodeOfStatus(code: status): EngineErrorCode | undefined {
  switch (code) {
    case status.INVALID_ARGUMENT:
      return 'INVALID_ARGUMENT';
    case status.NOT_FOUND:
      return 'NOT_FOUND';
    case status.ALREADY_EXISTS:
      return 'ALREADY_EXISTS';
    case status.OUT_OF_RANGE:
      return 'OUT_OF_RANGE';
    case status.RESOURCE_EXHAUSTED:
      return 'NO_SPACE';
    case status.FAILED_PRECONDITION:
      return 'FAILED_PRECONDITION';
    case status.DATA_LOSS:
      return 'CORRUPTION';
    default:
      return undefined;
  }
}

/**
 * A failed call whose status has no engine meaning (INTERNAL without an engine code, UNKNOWN,
 * DEADLINE_EXCEEDED, UNIMPLEMENTED, ...). Not an EngineError: the engine did not say what went
 * wrong in its own terms.
 */
export class EngineApiError extends Error {
  readonly grpcCode: status;

  constructor(grpcCode: status, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EngineApiError';
    this.grpcCode = grpcCode;
  }
}

/** The error a client call rejects with, for a ServiceError other than UNAVAILABLE. */
export function fromServiceError(err: ServiceError): EngineError | EngineApiError {
  const [fromMetadata] = err.metadata?.get(ERROR_CODE_METADATA_KEY) ?? [];
  const code =
    typeof fromMetadata === 'string' && isEngineErrorCode(fromMetadata) ? fromMetadata : engineCodeOfStatus(err.code);
  if (code !== undefined) return new EngineError(code, err.details, { cause: err });
  if (err.code === status.DEADLINE_EXCEEDED) {
    return new EngineApiError(err.code, 'the engine did not answer in time', { cause: err });
  }
  return new EngineApiError(err.code, err.details || `engine API call failed with gRPC status ${status[err.code]}`, { cause: err });
}
