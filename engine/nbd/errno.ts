/**
 * The one place where engine errors become NBD error values (and NBD option-reply errors).
 * Codes are mapped, never messages. Anything that is not an EngineError is a bug or an
 * unexpected failure: the client gets EIO and we log it, because nobody else will.
 */
import { isEngineError } from '../errors.ts';
import type { EngineErrorCode } from '../errors.ts';
import type { Logger } from '../logger.ts';
import {
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_UNKNOWN,
} from './protocol.ts';

/** NBD errno for an engine error code; exhaustive, so a new code fails to compile here. */
export function nbdErrnoForCode(code: EngineErrorCode): number {
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'OUT_OF_RANGE':
    case 'ALREADY_EXISTS':
    case 'FAILED_PRECONDITION':
      return NBD_EINVAL;
    case 'NO_SPACE':
      return NBD_ENOSPC;
    case 'READ_ONLY':
      return NBD_EPERM;
    // The volume vanished or is being changed under an open handle, or the storage failed:
    // from the client's point of view the I/O failed.
    case 'NOT_FOUND':
    case 'BUSY':
    case 'IO_ERROR':
    case 'CORRUPTION':
    case 'UNSUPPORTED_FORMAT':
      return NBD_EIO;
    default: {
      const unreachable: never = code;
      return unreachable;
    }
  }
}

/** NBD errno for anything a device call threw or rejected with. */
export function nbdErrnoFor(err: unknown, logger: Logger): number {
  if (isEngineError(err)) return nbdErrnoForCode(err.code);
  logger.error({ err }, 'unexpected error serving an NBD request; answering EIO');
  return NBD_EIO;
}

/**
 * Option-reply error for a failure to open an export during NBD_OPT_INFO / NBD_OPT_GO / the
 * meta-context options. A missing or malformed name is "unknown export"; every other failure
 * is reported as a policy refusal, with the reason in the reply's message.
 */
export function optionErrorFor(err: unknown, logger: Logger): number {
  if (isEngineError(err)) {
    if (err.code === 'NOT_FOUND' || err.code === 'INVALID_ARGUMENT') return NBD_REP_ERR_UNKNOWN;
    return NBD_REP_ERR_POLICY;
  }
  logger.error({ err }, 'unexpected error opening an NBD export');
  return NBD_REP_ERR_POLICY;
}

/** The message to show a human for a failed request or option, without internals. */
export function publicMessage(err: unknown): string {
  return isEngineError(err) ? err.message : 'internal error';
}
