/**
 * One transmission-phase request as the connection tracks it, and the checks that refuse a
 * request before it reaches the device. Ranges are not checked here: the device validates
 * every one against its current size, which may grow while we serve it.
 */
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EPERM,
} from './protocol.ts';

/**
 * One request between its header and its reply. A connection creates slots lazily, at most
 * its in-flight limit, and reuses them; the callbacks are bound once, when a slot is created.
 */
export interface RequestSlot {
  type: number;
  flags: number;
  handleHi: number;
  handleLo: number;
  /** Byte offset, or -1 when the client sent one at or beyond 2^53 (answered with EINVAL). */
  offset: number;
  lengthBytes: number;
  /** READ only: the whole reply, header and data; device.read fills the data part. */
  reply: Buffer | null;
  /** WRITE only: bytes this request holds in the server's WriteBudget until it is answered. */
  budgetBytes: number;
  readonly onDone: () => void;
  readonly onFail: (err: unknown) => void;
}

/** A request refused before it reaches the device. Preallocated: refusing costs nothing. */
export interface Rejection {
  readonly errno: number;
  readonly message: string;
}

const UNKNOWN_COMMAND: Rejection = { errno: NBD_EINVAL, message: 'unknown command' };
const BAD_FLAGS: Rejection = { errno: NBD_EINVAL, message: 'command flags not valid for this command' };
const OFFSET_TOO_LARGE: Rejection = { errno: NBD_EINVAL, message: 'offset beyond 2^53' };
export const TOO_LONG: Rejection = { errno: NBD_EINVAL, message: 'request longer than the maximum block size' };
/** What the device would answer too (OUT_OF_RANGE → EINVAL); used to refuse a WRITE early. */
export const OUT_OF_RANGE: Rejection = { errno: NBD_EINVAL, message: 'request goes beyond the end of the export' };
const READ_ONLY: Rejection = { errno: NBD_EPERM, message: 'export is read-only' };
const NO_CONTEXT: Rejection = { errno: NBD_EINVAL, message: 'base:allocation was not negotiated' };
const EMPTY_STATUS: Rejection = { errno: NBD_EINVAL, message: 'block status of zero bytes' };

/** What the checks need to know about the connection and its export. */
export interface RequestLimits {
  readonly maxRequestBytes: number;
  readonly readOnly: boolean;
  /** 0 when base:allocation was not negotiated. */
  readonly allocationContextId: number;
}

/** Command flags each command accepts. FUA is accepted on every command, as the protocol asks. */
function allowedFlags(type: number): number {
  switch (type) {
    case NBD_CMD_WRITE_ZEROES:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
      return NBD_CMD_FLAG_FUA;
  }
}

/** Null when the request may go to the device; otherwise why not. DISC never gets here. */
export function validateRequest(slot: RequestSlot, limits: RequestLimits): Rejection | null {
  const type = slot.type;
  const known =
    type === NBD_CMD_READ ||
    type === NBD_CMD_WRITE ||
    type === NBD_CMD_FLUSH ||
    type === NBD_CMD_TRIM ||
    type === NBD_CMD_WRITE_ZEROES ||
    type === NBD_CMD_BLOCK_STATUS;
  if (!known) return UNKNOWN_COMMAND;
  if ((slot.flags & ~allowedFlags(type)) !== 0) return BAD_FLAGS;
  if (slot.offset < 0) return OFFSET_TOO_LARGE;
  // Only READ and WRITE move data through memory; TRIM and WRITE_ZEROES may be any length.
  // (An over-long WRITE is refused by the parser, which must skip its payload first.)
  if (type === NBD_CMD_READ && slot.lengthBytes > limits.maxRequestBytes) return TOO_LONG;
  const modifies = type === NBD_CMD_WRITE || type === NBD_CMD_TRIM || type === NBD_CMD_WRITE_ZEROES;
  if (modifies && limits.readOnly) return READ_ONLY;
  if (type === NBD_CMD_BLOCK_STATUS) {
    if (limits.allocationContextId === 0) return NO_CONTEXT;
    if (slot.lengthBytes === 0) return EMPTY_STATUS;
  }
  return null;
}
