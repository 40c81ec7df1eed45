/**
 * The fixed-newstyle handshake: greeting, client flags, then options until the client picks an
 * export (NBD_OPT_GO or the legacy NBD_OPT_EXPORT_NAME) or leaves. The grammar is in
 * docs/internals/nbd.md.
 *
 * Ownership: an export opened for NBD_OPT_INFO or a meta-context query is closed before the
 * next option is read; the one opened for GO/EXPORT_NAME is handed to the caller inside the
 * result, and the caller must close it. When `negotiate` resolves with null the connection has
 * already been closed (gracefully after NBD_OPT_ABORT, abruptly after a protocol violation) and
 * no export is open.
 *
 * TLS (`opts.tls`, TCP listeners): the client must send NBD_OPT_STARTTLS first; after our ACK
 * the TLS handshake runs on the same socket and the options go on inside TLS, on a new reader.
 * The result then names the TLS socket and reader (`secured`) that transmission must use.
 */
import type { Socket } from 'node:net';
import type { BlockDevice, ExportProvider } from '../block-device.ts';
import type { Logger } from '../logger.ts';
import { optionErrorFor, publicMessage } from './errno.ts';
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_CONTEXT_ID,
  BASE_NAMESPACE,
  BLOCK_SIZE_MIN_BYTES,
  BLOCK_SIZE_PREFERRED_BYTES,
  EXPORT_NAME_PADDING_BYTES,
  EXPORT_NAME_REPLY_BYTES,
  GREETING_BYTES,
  HANDSHAKE_BUFFER_MAX_BYTES,
  HANDSHAKE_OPTIONS_MAX,
  INFO_BLOCK_SIZE_BYTES,
  INFO_EXPORT_BYTES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_KNOWN_CLIENT_FLAGS,
  NBD_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_STRING_MAX_BYTES,
  OPTION_DATA_MAX_BYTES,
  OPTION_HEADER_BYTES,
  OPTION_REPLY_HEADER_BYTES,
} from './protocol.ts';
import { ConnectionClosedError, SocketReader } from './socket-reader.ts';
import { decodeNbdString, writeUInt64 } from './wire.ts';

export interface NegotiatedExport {
  readonly name: string;
  /** Open handle; the transmission phase owns it from here on. */
  readonly device: BlockDevice;
  /** Structured replies were negotiated: READ answers in chunks, errors carry a message. */
  readonly structuredReplies: boolean;
  /** Context id of base:allocation for NBD_CMD_BLOCK_STATUS, or 0 when not selected. */
  readonly allocationContextId: number;
  /**
   * Set when the client upgraded to TLS: transmission runs on this socket, not the accepted
   * one, and this reader holds what the client sent past the handshake.
   */
  readonly secured?: { readonly socket: Socket; readonly reader: SocketReader };
}

/** The TLS upgrade of a TLS-only listener (engine/nbd/tls-acceptor.ts). */
export interface StartTls {
  /**
   * Runs the TLS handshake on the idle socket. Resolves with the TLS socket once the client is
   * authenticated; rejects (the message says why) with the connection closed otherwise.
   */
  upgrade(socket: Socket): Promise<Socket>;
}

export interface HandshakeOptions {
  readonly exports: ExportProvider;
  /** Largest READ/WRITE payload, advertised as the maximum block size. */
  readonly maxRequestBytes: number;
  readonly logger: Logger;
  /**
   * Present on a listener that requires TLS (FORCEDTLS in the protocol's terms): until the
   * client has upgraded, every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD and
   * NBD_OPT_EXPORT_NAME closes the connection. Absent: STARTTLS is refused (NOTLS).
   */
  readonly tls?: StartTls;
}

/** Transmission flags for an export: everything we support, plus READ_ONLY for snapshots. */
export function transmissionFlags(readOnly: boolean): number {
  const flags =
    NBD_FLAG_HAS_FLAGS |
    NBD_FLAG_SEND_FLUSH |
    NBD_FLAG_SEND_FUA |
    NBD_FLAG_SEND_TRIM |
    NBD_FLAG_SEND_WRITE_ZEROES |
    NBD_FLAG_SEND_FAST_ZERO |
    NBD_FLAG_CAN_MULTI_CONN;
  return readOnly ? flags | NBD_FLAG_READ_ONLY : flags;
}

/** Runs the handshake; see the module comment for what null means. Never rejects. */
export async function negotiate(
  socket: Socket,
  reader: SocketReader,
  opts: HandshakeOptions,
): Promise<NegotiatedExport | null> {
  try {
    return await new Handshake(socket, opts).run(reader);
  } catch (err) {
    if (!(err instanceof ConnectionClosedError)) {
      opts.logger.error({ err }, 'NBD handshake failed');
    }
    socket.destroy();
    return null;
  }
}

/** What an option handler asks the option loop to do next. */
const CONTINUE = 'continue';
const ABORT = 'abort';
const HANG_UP = 'hang-up';
type OptionOutcome = NegotiatedExport | typeof CONTINUE | typeof ABORT | typeof HANG_UP;

interface InfoRequest {
  name: string;
  infoTypes: number[];
}

interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

class Handshake {
  /** The accepted socket, then the TLS socket once the client upgraded. */
  private socket: Socket;
  private readonly exports: ExportProvider;
  private readonly maxRequestBytes: number;
  private readonly logger: Logger;
  private readonly tls: StartTls | undefined;
  /** The TLS socket and its reader, once the client upgraded. */
  private secured: { socket: Socket; reader: SocketReader } | null = null;
  private refusedWithoutTls = false;
  private noZeroes = false;
  private structuredReplies = false;
  /** The last SET_META_CONTEXT: for which export, and whether it selected base:allocation. */
  private metaSelection: { exportName: string; allocation: boolean } | null = null;

  constructor(socket: Socket, opts: HandshakeOptions) {
    this.socket = socket;
    this.exports = opts.exports;
    this.maxRequestBytes = opts.maxRequestBytes;
    this.logger = opts.logger;
    this.tls = opts.tls;
  }

  async run(reader: SocketReader): Promise<NegotiatedExport | null> {
    this.socket.write(greeting());
    const clientFlags = (await reader.read(4)).readUInt32BE(0);
    if ((clientFlags & ~NBD_KNOWN_CLIENT_FLAGS) !== 0) {
      return this.hangUp('unknown client flags', { clientFlags });
    }
    this.noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
    if (this.tls !== undefined && (clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE) === 0) {
      return this.hangUp('TLS is required and needs fixed newstyle', { clientFlags });
    }
    for (let i = 0; i < HANDSHAKE_OPTIONS_MAX; i++) {
      // A client that sends options without reading the replies (NBD_OPT_LIST over and over)
      // would make us queue replies without bound; wait until it has read them. The handshake
      // timeout ends a client that never does.
      if (this.socket.writableNeedDrain) await drainedOrClosed(this.socket);
      const header = await reader.read(OPTION_HEADER_BYTES);
      if (header.readBigUInt64BE(0) !== NBD_OPTS_MAGIC) return this.hangUp('bad option magic');
      const option = header.readUInt32BE(8);
      const lengthBytes = header.readUInt32BE(12);
      if (lengthBytes > OPTION_DATA_MAX_BYTES) {
        return this.hangUp('option data too long', { option, lengthBytes });
      }
      const data = await reader.read(lengthBytes);
      if (option === NBD_OPT_STARTTLS && this.tls !== undefined) {
        const next = await this.startTls(this.tls, data, reader);
        if (next === null) return null;
        reader = next;
        continue;
      }
      if (this.tls !== undefined && this.secured === null && option !== NBD_OPT_ABORT) {
        if (option === NBD_OPT_EXPORT_NAME) return this.hangUp('NBD_OPT_EXPORT_NAME before TLS');
        this.refuseWithoutTls(option);
        continue;
      }
      const outcome = this.handleOption(option, data);
      if (outcome === CONTINUE) continue;
      if (outcome === HANG_UP) return this.hangUp('unusable NBD_OPT_EXPORT_NAME');
      if (outcome === ABORT) {
        this.socket.destroySoon(); // Let the ACK reach the client first.
        return null;
      }
      return outcome;
    }
    return this.hangUp('too many options');
  }

  private handleOption(option: number, data: Buffer): OptionOutcome {
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return this.exportName(data);
      case NBD_OPT_ABORT:
        // Data is ignored rather than rejected, as the protocol asks.
        this.reply(option, NBD_REP_ACK);
        return ABORT;
      case NBD_OPT_LIST:
        return this.list(option, data);
      case NBD_OPT_STARTTLS:
        this.replyError(option, NBD_REP_ERR_POLICY, 'TLS is not offered on this socket');
        return CONTINUE;
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.infoOrGo(option, data);
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) return this.invalid(option, 'unexpected option data');
        this.structuredReplies = true;
        this.reply(option, NBD_REP_ACK);
        return CONTINUE;
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        return this.metaContext(option, data);
      default:
        this.replyError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
        return CONTINUE;
    }
  }

  /**
   * NBD_OPT_STARTTLS on a TLS listener. Returns the reader to go on with (a new one, over TLS,
   * after an upgrade), or null once the connection is closed.
   */
  private async startTls(tls: StartTls, data: Buffer, reader: SocketReader): Promise<SocketReader | null> {
    const option = NBD_OPT_STARTTLS;
    if (this.secured !== null) {
      this.replyError(option, NBD_REP_ERR_INVALID, 'TLS is already active');
      return reader;
    }
    if (data.length !== 0) {
      this.replyError(option, NBD_REP_ERR_INVALID, 'unexpected option data');
      return reader;
    }
    // The client must wait for our ACK before its first TLS byte. Bytes it sent already would
    // be neither plaintext options nor TLS (the STARTTLS injection of other protocols), so
    // they end the connection. Paused first: nothing may be emitted before TLS takes over.
    this.socket.pause();
    if (reader.detach().length !== 0) return this.hangUp('data after NBD_OPT_STARTTLS, before its reply');
    this.reply(option, NBD_REP_ACK);
    let secure: Socket;
    try {
      secure = await tls.upgrade(this.socket);
    } catch (err) {
      this.logger.warn({ reason: err instanceof Error ? err.message : String(err) }, 'NBD TLS handshake failed; connection closed');
      this.socket.destroy();
      return null;
    }
    secure.on('error', (err) => this.logger.debug({ err }, 'NBD TLS socket error'));
    const secureReader = new SocketReader(secure, HANDSHAKE_BUFFER_MAX_BYTES);
    this.socket = secure;
    this.secured = { socket: secure, reader: secureReader };
    // Nothing negotiated in plaintext may carry over into TLS (nbdkit's CVE-2021-3716). Here
    // nothing can be, since every such option was refused; reset anyway.
    this.structuredReplies = false;
    this.metaSelection = null;
    this.logger.debug('NBD TLS established');
    return secureReader;
  }

  private refuseWithoutTls(option: number): void {
    if (!this.refusedWithoutTls) {
      this.refusedWithoutTls = true;
      this.logger.info({ option }, 'NBD client negotiating without TLS on a TLS-only listener; refusing its options');
    }
    this.replyError(option, NBD_REP_ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
  }

  /** Legacy entry into transmission. It has no error reply, so any failure hangs up. */
  private exportName(data: Buffer): OptionOutcome {
    const name = decodeNbdString(data, NBD_STRING_MAX_BYTES);
    if (name === null) return HANG_UP;
    let device: BlockDevice;
    try {
      device = this.exports.openExport(name);
    } catch (err) {
      this.logger.info({ exportName: name, err: publicMessage(err) }, 'NBD export not available');
      return HANG_UP;
    }
    try {
      const padding = this.noZeroes ? 0 : EXPORT_NAME_PADDING_BYTES;
      const reply = Buffer.alloc(EXPORT_NAME_REPLY_BYTES + padding);
      writeUInt64(reply, device.sizeBytes, 0);
      reply.writeUInt16BE(transmissionFlags(device.readOnly), 8);
      this.socket.write(reply);
    } catch (err) {
      device.close();
      throw err;
    }
    return this.negotiated(name, device);
  }

  private list(option: number, data: Buffer): OptionOutcome {
    if (data.length !== 0) return this.invalid(option, 'unexpected option data');
    let names: string[];
    try {
      names = this.exports.listExports();
    } catch (err) {
      this.replyError(option, optionErrorFor(err, this.logger), publicMessage(err));
      return CONTINUE;
    }
    for (const name of names) {
      const nameBytes = Buffer.from(name, 'utf8');
      const payload = Buffer.allocUnsafe(4 + nameBytes.length);
      payload.writeUInt32BE(nameBytes.length, 0);
      nameBytes.copy(payload, 4);
      this.reply(option, NBD_REP_SERVER, payload);
    }
    this.reply(option, NBD_REP_ACK);
    return CONTINUE;
  }

  private infoOrGo(option: number, data: Buffer): OptionOutcome {
    const request = parseInfoRequest(data);
    if (request === null) return this.invalid(option, 'malformed INFO/GO request');
    let device: BlockDevice;
    try {
      device = this.exports.openExport(request.name);
    } catch (err) {
      this.replyError(option, optionErrorFor(err, this.logger), publicMessage(err));
      return CONTINUE;
    }
    try {
      this.sendInfo(option, request, device);
      this.reply(option, NBD_REP_ACK);
    } catch (err) {
      device.close();
      throw err;
    }
    if (option === NBD_OPT_INFO) {
      device.close();
      return CONTINUE;
    }
    return this.negotiated(request.name, device);
  }

  /** NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE always; NAME and DESCRIPTION when asked. */
  private sendInfo(option: number, request: InfoRequest, device: BlockDevice): void {
    const exportInfo = Buffer.allocUnsafe(INFO_EXPORT_BYTES);
    exportInfo.writeUInt16BE(NBD_INFO_EXPORT, 0);
    writeUInt64(exportInfo, device.sizeBytes, 2);
    exportInfo.writeUInt16BE(transmissionFlags(device.readOnly), 10);
    this.reply(option, NBD_REP_INFO, exportInfo);

    const blockSize = Buffer.allocUnsafe(INFO_BLOCK_SIZE_BYTES);
    blockSize.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
    blockSize.writeUInt32BE(BLOCK_SIZE_MIN_BYTES, 2);
    blockSize.writeUInt32BE(BLOCK_SIZE_PREFERRED_BYTES, 6);
    blockSize.writeUInt32BE(this.maxRequestBytes, 10);
    this.reply(option, NBD_REP_INFO, blockSize);

    if (request.infoTypes.includes(NBD_INFO_NAME)) {
      this.reply(option, NBD_REP_INFO, infoString(NBD_INFO_NAME, device.name));
    }
    if (request.infoTypes.includes(NBD_INFO_DESCRIPTION)) {
      const text = device.readOnly ? 'Braid read-only volume' : 'Braid volume';
      this.reply(option, NBD_REP_INFO, infoString(NBD_INFO_DESCRIPTION, text));
    }
  }

  /** LIST_META_CONTEXT and SET_META_CONTEXT; we only know base:allocation. */
  private metaContext(option: number, data: Buffer): OptionOutcome {
    // SET replaces the previous selection even when it fails.
    if (option === NBD_OPT_SET_META_CONTEXT) this.metaSelection = null;
    if (!this.structuredReplies) {
      return this.invalid(option, 'structured replies must be negotiated first');
    }
    const request = parseMetaContextRequest(data);
    if (request === null) return this.invalid(option, 'malformed meta context request');
    try {
      this.exports.openExport(request.exportName).close();
    } catch (err) {
      this.replyError(option, optionErrorFor(err, this.logger), publicMessage(err));
      return CONTINUE;
    }
    const allocation =
      option === NBD_OPT_LIST_META_CONTEXT
        ? request.queries.length === 0 ||
          request.queries.some((q) => q === BASE_NAMESPACE || q === BASE_ALLOCATION)
        : request.queries.includes(BASE_ALLOCATION);
    if (allocation) {
      // Ids in LIST replies are reserved and sent as zero.
      const id = option === NBD_OPT_SET_META_CONTEXT ? BASE_ALLOCATION_CONTEXT_ID : 0;
      const nameBytes = Buffer.from(BASE_ALLOCATION, 'utf8');
      const payload = Buffer.allocUnsafe(4 + nameBytes.length);
      payload.writeUInt32BE(id, 0);
      nameBytes.copy(payload, 4);
      this.reply(option, NBD_REP_META_CONTEXT, payload);
    }
    if (option === NBD_OPT_SET_META_CONTEXT) {
      this.metaSelection = { exportName: request.exportName, allocation };
    }
    this.reply(option, NBD_REP_ACK);
    return CONTINUE;
  }

  private negotiated(name: string, device: BlockDevice): NegotiatedExport {
    // BLOCK_STATUS is allowed only if the last SET_META_CONTEXT named this same export.
    const selection = this.metaSelection;
    const allocation =
      this.structuredReplies && selection !== null && selection.allocation && selection.exportName === name;
    return {
      name,
      device,
      structuredReplies: this.structuredReplies,
      allocationContextId: allocation ? BASE_ALLOCATION_CONTEXT_ID : 0,
      ...(this.secured === null ? {} : { secured: this.secured }),
    };
  }

  private invalid(option: number, message: string): OptionOutcome {
    this.replyError(option, NBD_REP_ERR_INVALID, message);
    return CONTINUE;
  }

  private hangUp(reason: string, details: object = {}): null {
    this.logger.warn({ ...details, reason }, 'closing NBD connection during the handshake');
    this.socket.destroy();
    return null;
  }

  private replyError(option: number, type: number, message: string): void {
    this.reply(option, type, Buffer.from(message, 'utf8'));
  }

  private reply(option: number, type: number, payload?: Buffer): void {
    const lengthBytes = payload === undefined ? 0 : payload.length;
    const buf = Buffer.allocUnsafe(OPTION_REPLY_HEADER_BYTES + lengthBytes);
    buf.writeBigUInt64BE(NBD_REP_MAGIC, 0);
    buf.writeUInt32BE(option, 8);
    buf.writeUInt32BE(type, 12);
    buf.writeUInt32BE(lengthBytes, 16);
    if (payload !== undefined) payload.copy(buf, OPTION_REPLY_HEADER_BYTES);
    this.socket.write(buf);
  }
}

function drainedOrClosed(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

function greeting(): Buffer {
  const buf = Buffer.allocUnsafe(GREETING_BYTES);
  buf.writeBigUInt64BE(NBD_MAGIC, 0);
  buf.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  buf.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  return buf;
}

function infoString(infoType: number, text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  const buf = Buffer.allocUnsafe(2 + bytes.length);
  buf.writeUInt16BE(infoType, 0);
  bytes.copy(buf, 2);
  return buf;
}

/** INFO/GO data: u32 name length, name, u16 count, count × u16 info type. */
function parseInfoRequest(data: Buffer): InfoRequest | null {
  if (data.length < 6) return null;
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 6) return null;
  const name = decodeNbdString(data.subarray(4, 4 + nameBytes), NBD_STRING_MAX_BYTES);
  const count = data.readUInt16BE(4 + nameBytes);
  if (name === null || data.length !== 6 + nameBytes + 2 * count) return null;
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(data.readUInt16BE(6 + nameBytes + 2 * i));
  return { name, infoTypes };
}

/** META_CONTEXT data: u32 name length, name, u32 count, count × (u32 length, query). */
function parseMetaContextRequest(data: Buffer): MetaContextRequest | null {
  if (data.length < 8) return null;
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 8) return null;
  const exportName = decodeNbdString(data.subarray(4, 4 + nameBytes), NBD_STRING_MAX_BYTES);
  if (exportName === null) return null;
  const count = data.readUInt32BE(4 + nameBytes);
  const queries: string[] = [];
  let at = 8 + nameBytes;
  // Each query takes at least 4 bytes, so the data length bounds this loop as well.
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return null;
    const queryBytes = data.readUInt32BE(at);
    at += 4;
    if (queryBytes > data.length - at) return null;
    const query = decodeNbdString(data.subarray(at, at + queryBytes), NBD_STRING_MAX_BYTES);
    at += queryBytes;
    // A query must start with a non-empty namespace and a colon.
    if (query === null || query.indexOf(':') < 1) return null;
    queries.push(query);
  }
  return at === data.length ? { exportName, queries } : null;
}
