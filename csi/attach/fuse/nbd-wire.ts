/**
 * The client side of the NBD bytes (docs/internals/nbd.md has the grammar; the constants are the
 * engine's pure protocol table, engine/nbd/protocol.ts, which imports nothing): option requests
 * and replies of the fixed-newstyle handshake, transmission requests, simple replies. Big-endian
 * throughout. Pure functions; the sockets are in nbd-handshake.ts and nbd-connection.ts.
 */
import {
  INFO_EXPORT_BYTES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_OPTS_MAGIC,
  NBD_REP_MAGIC,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  OPTION_HEADER_BYTES,
  OPTION_REPLY_HEADER_BYTES,
  REQUEST_HEADER_BYTES,
  SIMPLE_REPLY_BYTES,
} from '../../../engine/nbd/protocol.ts';

/** Bytes the server sent that do not follow the protocol: the connection cannot go on. */
export class NbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NbdProtocolError';
  }
}

/** An option header and its data, as one buffer. */
export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(OPTION_HEADER_BYTES + data.length);
  buf.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  buf.writeUInt32BE(option, 8);
  buf.writeUInt32BE(data.length, 12);
  data.copy(buf, OPTION_HEADER_BYTES);
  return buf;
}

/** NBD_OPT_INFO / NBD_OPT_GO data: the export name, and the one extra item we ask for (block sizes). */
export function encodeInfoRequest(exportName: string): Buffer {
  const name = Buffer.from(exportName, 'utf8');
  const buf = Buffer.alloc(4 + name.length + 2 + 2);
  buf.writeUInt32BE(name.length, 0);
  name.copy(buf, 4);
  buf.writeUInt16BE(1, 4 + name.length);
  buf.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 6 + name.length);
  return buf;
}

export interface OptionReplyHeader {
  option: number;
  type: number;
  dataBytes: number;
}

export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader {
  if (buf.length < OPTION_REPLY_HEADER_BYTES) throw new NbdProtocolError('short option reply header');
  const magic = buf.readBigUInt64BE(0);
  if (magic !== NBD_REP_MAGIC) throw new NbdProtocolError(`bad option reply magic 0x${magic.toString(16)}`);
  return { option: buf.readUInt32BE(8), type: buf.readUInt32BE(12), dataBytes: buf.readUInt32BE(16) };
}

/** What NBD_OPT_INFO / NBD_OPT_GO told us about an export. */
export interface ExportInfo {
  sizeBytes: number;
  /** Transmission flags (NBD_FLAG_*). */
  flags: number;
  /** The largest READ/WRITE payload, when the server said (NBD_INFO_BLOCK_SIZE). */
  maxPayloadBytes: number | undefined;
}

/** Folds one NBD_REP_INFO item into what we know; unknown items are ignored, as the protocol asks. */
export function applyInfoItem(info: Partial<ExportInfo>, data: Buffer): void {
  if (data.length < 2) throw new NbdProtocolError('an NBD_REP_INFO without its type');
  const type = data.readUInt16BE(0);
  if (type === NBD_INFO_EXPORT) {
    if (data.length < INFO_EXPORT_BYTES) throw new NbdProtocolError('a short NBD_INFO_EXPORT');
    const high = data.readUInt32BE(2);
    if (high >= 0x20_0000) throw new NbdProtocolError('an export of 2^53 bytes or more');
    info.sizeBytes = high * 0x1_0000_0000 + data.readUInt32BE(6);
    info.flags = data.readUInt16BE(10);
  } else if (type === NBD_INFO_BLOCK_SIZE && data.length >= 14) {
    info.maxPayloadBytes = data.readUInt32BE(10);
  }
}

/** A transmission request header (28 bytes); WRITE data follows it on the wire. */
export function encodeRequest(command: number, handle: number, offset: number, length: number, flags = 0): Buffer {
  const buf = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
  buf.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  buf.writeUInt16BE(flags, 4);
  buf.writeUInt16BE(command, 6);
  // The handle is opaque to the server; ours fits in 32 bits and goes in the low word.
  buf.writeUInt32BE(0, 8);
  buf.writeUInt32BE(handle, 12);
  buf.writeUInt32BE(Math.floor(offset / 0x1_0000_0000), 16);
  buf.writeUInt32BE(offset >>> 0, 20);
  buf.writeUInt32BE(length, 24);
  return buf;
}

export interface SimpleReply {
  errno: number;
  handle: number;
}

/** A simple reply header at `at` (16 bytes). Structured replies are never negotiated, so anything else is an error. */
export function decodeSimpleReply(buf: Buffer, at = 0): SimpleReply {
  const magic = buf.readUInt32BE(at);
  if (magic !== NBD_SIMPLE_REPLY_MAGIC) throw new NbdProtocolError(`bad reply magic 0x${magic.toString(16)}`);
  if (buf.readUInt32BE(at + 8) !== 0) throw new NbdProtocolError('a reply to a handle we never sent');
  return { errno: buf.readUInt32BE(at + 4), handle: buf.readUInt32BE(at + 12) };
}

export { REQUEST_HEADER_BYTES, SIMPLE_REPLY_BYTES };
