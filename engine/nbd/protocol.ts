/**
 * NBD wire constants and Braid's limits, in one place. The byte layouts they belong to are
 * described, with a worked example, in docs/internals/nbd.md; values are those of the public
 * NBD protocol document (NetworkBlockDevice/nbd, doc/proto.md). Every number is big-endian on
 * the wire. 64-bit magics are kept as bigint because they are only written or compared during
 * the handshake, never per request.
 */

// ---- Handshake ----------------------------------------------------------------------------

/** ASCII "NBDMAGIC": the first eight bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** ASCII "IHAVEOPT": second greeting word, and the prefix of every client option. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Prefix of every option reply, so a client can resynchronise on replies it does not know. */
export const NBD_REP_MAGIC = 0x0003e889045565a9n;

/** Greeting: NBDMAGIC (8) + IHAVEOPT (8) + handshake flags (2). */
export const GREETING_BYTES = 18;
/** Client option header: IHAVEOPT (8) + option (4) + data length (4). */
export const OPTION_HEADER_BYTES = 16;
/** Option reply header: magic (8) + option (4) + reply type (4) + data length (4). */
export const OPTION_REPLY_HEADER_BYTES = 20;
/** NBD_OPT_EXPORT_NAME reply: size (8) + transmission flags (2), then optional zero padding. */
export const EXPORT_NAME_REPLY_BYTES = 10;
/** Reserved zeroes after the NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was agreed. */
export const EXPORT_NAME_PADDING_BYTES = 124;

/** Handshake flag: we speak fixed newstyle, so unknown options get an error, not a hang-up. */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
/** Handshake flag: we can omit the 124 padding bytes after NBD_OPT_EXPORT_NAME. */
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flag: the client speaks fixed newstyle. */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
/** Client flag: the client does not want the 124 padding bytes. */
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
/** Any other client flag bit is a protocol violation and closes the connection. */
export const NBD_KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

/** Legacy way into transmission; it cannot report errors, so failure means hanging up. */
export const NBD_OPT_EXPORT_NAME = 1;
/** Client gives up negotiating; we acknowledge and close. */
export const NBD_OPT_ABORT = 2;
/** One NBD_REP_SERVER per export, then an ACK. */
export const NBD_OPT_LIST = 3;
/** TLS upgrade: ACK then the TLS handshake on a TLS listener; NBD_REP_ERR_POLICY elsewhere. */
export const NBD_OPT_STARTTLS = 5;
/** Describe one export without entering transmission. */
export const NBD_OPT_INFO = 6;
/** Describe one export and enter transmission: NBD_OPT_EXPORT_NAME with error replies. */
export const NBD_OPT_GO = 7;
/** Client asks for structured replies (needed for errors on READ and for BLOCK_STATUS). */
export const NBD_OPT_STRUCTURED_REPLY = 8;
/** Which metadata contexts exist (we have only base:allocation). */
export const NBD_OPT_LIST_META_CONTEXT = 9;
/** Select metadata contexts for NBD_CMD_BLOCK_STATUS. */
export const NBD_OPT_SET_META_CONTEXT = 10;

/** Option succeeded, or a multi-part answer (LIST, INFO) is complete. */
export const NBD_REP_ACK = 1;
/** One export in the answer to NBD_OPT_LIST. */
export const NBD_REP_SERVER = 2;
/** One NBD_INFO_* item in the answer to NBD_OPT_INFO / NBD_OPT_GO. */
export const NBD_REP_INFO = 3;
/** One metadata context in the answer to LIST/SET_META_CONTEXT. */
export const NBD_REP_META_CONTEXT = 4;
/** Error replies have bit 31 set. */
const NBD_REP_FLAG_ERROR = 0x8000_0000;
/** The option is unknown to this server. */
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
/** The option is known but refused by policy (STARTTLS without TLS, unusable exports). */
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
/** The option's data is malformed. */
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
/** On a TLS-only listener, any option but STARTTLS and ABORT before the client upgraded. */
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
/** The named export does not exist. */
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;

/** Size and transmission flags; mandatory before a successful INFO/GO. */
export const NBD_INFO_EXPORT = 0;
/** Canonical export name, sent when the client asks. */
export const NBD_INFO_NAME = 1;
/** Human-readable description, sent when the client asks. */
export const NBD_INFO_DESCRIPTION = 2;
/** Minimum, preferred and maximum request sizes; we always send it. */
export const NBD_INFO_BLOCK_SIZE = 3;
/** NBD_INFO_EXPORT payload: type (2) + size (8) + transmission flags (2). */
export const INFO_EXPORT_BYTES = 12;
/** NBD_INFO_BLOCK_SIZE payload: type (2) + three 32-bit sizes. */
export const INFO_BLOCK_SIZE_BYTES = 14;

/** The one metadata context we serve: holes and known-zero ranges. */
export const BASE_ALLOCATION = 'base:allocation';
/** Namespace prefix of BASE_ALLOCATION; "base:" alone is a wildcard for LIST only. */
export const BASE_NAMESPACE = 'base:';
/** Context id we assign to base:allocation in SET replies; any non-reserved value would do. */
export const BASE_ALLOCATION_CONTEXT_ID = 1;

// ---- Transmission flags (sent in NBD_INFO_EXPORT / the EXPORT_NAME reply) -----------------

/** Must always be set. */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
/** The export refuses writes (a snapshot). */
export const NBD_FLAG_READ_ONLY = 1 << 1;
/** We accept NBD_CMD_FLUSH. */
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
/** We accept NBD_CMD_FLAG_FUA. */
export const NBD_FLAG_SEND_FUA = 1 << 3;
/** We accept NBD_CMD_TRIM. */
export const NBD_FLAG_SEND_TRIM = 1 << 5;
/** We accept NBD_CMD_WRITE_ZEROES and NBD_CMD_FLAG_NO_HOLE. */
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
/** One shared log: a flush on any connection covers writes acknowledged on all of them. */
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
/** We accept NBD_CMD_FLAG_FAST_ZERO; zeroing is metadata-only, so it is always fast. */
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---- Transmission phase -------------------------------------------------------------------

/** First word of every request. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** First word of a simple reply. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** First word of a structured reply chunk. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Request: magic (4) + flags (2) + type (2) + handle (8) + offset (8) + length (4). */
export const REQUEST_HEADER_BYTES = 28;
/** Simple reply: magic (4) + error (4) + handle (8). */
export const SIMPLE_REPLY_BYTES = 16;
/** Structured chunk header: magic (4) + flags (2) + type (2) + handle (8) + length (4). */
export const STRUCTURED_HEADER_BYTES = 20;
/** OFFSET_DATA chunk prefix before the data: the 64-bit offset. */
export const OFFSET_DATA_PREFIX_BYTES = 8;
/** ERROR chunk payload before the message: errno (4) + message length (2). */
export const ERROR_PAYLOAD_BYTES = 6;
/** BLOCK_STATUS chunk payload: context id (4), then (length 4 + flags 4) per extent. */
export const BLOCK_STATUS_ID_BYTES = 4;
export const BLOCK_STATUS_EXTENT_BYTES = 8;

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
/** Disconnect: finish what is in flight, then close; no reply. */
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

/** Persist this command's writes before replying. Valid on every command. */
export const NBD_CMD_FLAG_FUA = 1 << 0;
/** WRITE_ZEROES must leave the range allocated (mayUnmap = false). */
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
/** READ must come back in one chunk; we do not advertise SEND_DF, so it is invalid here. */
export const NBD_CMD_FLAG_DF = 1 << 2;
/** BLOCK_STATUS: answer with exactly one extent. */
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
/** WRITE_ZEROES: fail with ENOTSUP unless zeroing is fast (ours always is). */
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

/** Structured reply flag on the last chunk of a reply. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
/** Empty final chunk (used for a zero-length READ). */
export const NBD_REPLY_TYPE_NONE = 0;
/** READ data with its offset. */
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
/** base:allocation extents. */
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
/** Error chunk: errno + optional message. Bit 15 marks error chunk types. */
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;

/** base:allocation status bit: unallocated. */
export const NBD_STATE_HOLE = 1 << 0;
/** base:allocation status bit: reads as zeroes. */
export const NBD_STATE_ZERO = 1 << 1;

/** The protocol's own errno values (not the host's). */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;

// ---- Braid's limits -----------------------------------------------------------------------

/** Option data above this closes the connection: no option we know needs more. */
export const OPTION_DATA_MAX_BYTES = 64 * 1024;
/** Options per handshake; bounds the loop. Generous, since nbdinfo --list sends one per export. */
export const HANDSHAKE_OPTIONS_MAX = 1 << 16;
/** NBD strings (export names, queries) must be no longer than this. */
export const NBD_STRING_MAX_BYTES = 4096;
/** Bytes a client may send ahead during the handshake before we treat it as abuse. */
export const HANDSHAKE_BUFFER_MAX_BYTES = 1024 * 1024;
/** Default largest READ/WRITE payload; 32 MiB is what clients assume without negotiation. */
export const DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024;
/** Advertised minimum block size: the engine does read-modify-write, so any byte works. */
export const BLOCK_SIZE_MIN_BYTES = 1;
/** Advertised preferred block size: the engine's 4 KiB block. */
export const BLOCK_SIZE_PREFERRED_BYTES = 4096;
/** Default bound on requests being served per connection; reading pauses beyond it. */
export const DEFAULT_MAX_IN_FLIGHT = 128;
/** Default bound on open connections; later ones are closed at once. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/**
 * Default bound on WRITE payload bytes in flight over all connections (received or being
 * received, up to the reply); connections whose next WRITE does not fit pause reading.
 */
export const DEFAULT_MAX_INFLIGHT_WRITE_BYTES = 256 * 1024 * 1024;
/** Default time from accept to the end of the handshake; a slower client is disconnected. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 30_000;
/**
 * Default period of the stall check that runs while WRITEs wait for budget: a client whose
 * payload did not move between two checks is disconnected.
 */
export const DEFAULT_PAYLOAD_STALL_TIMEOUT_MS = 30_000;
/** While refusals over the connection limit go on, a summary is logged this often. */
export const REFUSAL_SUMMARY_INTERVAL_MS = 60_000;
/** Extents per BLOCK_STATUS reply (8 KiB); clients ask again from the first uncovered byte. */
export const BLOCK_STATUS_EXTENTS_MAX = 1024;
/**
 * READ data held for one connection (being read plus queued on the socket) above which we stop
 * reading new requests until the client drains its replies.
 */
export const REPLY_BACKLOG_MAX_BYTES = 64 * 1024 * 1024;
/**
 * Replies queued on a socket that is not draining, above which we stop reading new requests:
 * bounds the queue of a client that never reads its (small) replies by count, not just bytes.
 */
export const REPLY_QUEUE_MAX = 1024;
/** A payload assembly buffer up to this size is kept for the next WRITE; larger ones are not. */
export const PAYLOAD_BUFFER_RETAIN_BYTES = 1024 * 1024;
/** Error messages in structured ERROR chunks are cut to this many bytes. */
export const ERROR_MESSAGE_MAX_BYTES = 256;
/** Offsets at or above 2^53 cannot be held exactly in a number; we refuse them. */
export const OFFSET_HIGH_WORD_LIMIT = 0x20_0000;
