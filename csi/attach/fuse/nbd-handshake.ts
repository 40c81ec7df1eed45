/**
 * Opening an NBD connection: connect to the engine's unix socket, fixed-newstyle greeting, then
 * NBD_OPT_GO (enter transmission) or NBD_OPT_INFO (only learn the size, then NBD_OPT_ABORT).
 * The whole exchange is bounded by one timer, so an engine that accepts but never answers
 * cannot hold a reconnect attempt forever.
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_INFO,
  GREETING_BYTES,
  OPTION_REPLY_HEADER_BYTES,
} from '../../../engine/nbd/protocol.ts';
import { applyInfoItem, decodeOptionReplyHeader, encodeInfoRequest, encodeOption, NbdProtocolError } from './nbd-wire.ts';
import type { ExportInfo } from './nbd-wire.ts';

/** A live engine finishes the handshake in milliseconds. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/** How long a server may take to close after NBD_OPT_ABORT before we close ourselves. */
const ABORT_GRACE_MS = 1_000;
/** Replies to one option; the engine sends three. */
const MAX_REPLIES_PER_OPTION = 64;
/** Option reply data we accept (an error message, an info item). */
const MAX_OPTION_REPLY_BYTES = 64 * 1024;

/** The server refused the option (an NBD_REP_ERR_* reply), e.g. an unknown export. */
export class NbdOptionRefusedError extends Error {
  readonly replyType: number;
  constructor(option: number, replyType: number, message: string) {
    super(`the NBD server refused option ${option} (reply 0x${replyType.toString(16)})${message ? `: ${message}` : ''}`);
    this.name = 'NbdOptionRefusedError';
    this.replyType = replyType;
  }
}

export interface OpenedConnection {
  socket: Socket;
  info: ExportInfo;
  /** Bytes that arrived after the handshake (none from a correct server; kept for the reply parser). */
  rest: Buffer;
}

/** Connects and enters transmission on `exportName`. The socket is returned paused, with no listeners. */
export async function openConnection(socketPath: string, exportName: string, timeoutMs = HANDSHAKE_TIMEOUT_MS): Promise<OpenedConnection> {
  return withConnection(socketPath, timeoutMs, async (socket, reader) => {
    const info = await negotiate(socket, reader, exportName, NBD_OPT_GO);
    return { socket, info, rest: reader.detach() };
  });
}

/** The export as the server describes it now, on a short connection of its own (NBD_OPT_INFO). */
export async function queryExport(socketPath: string, exportName: string, timeoutMs = HANDSHAKE_TIMEOUT_MS): Promise<ExportInfo> {
  return withConnection(socketPath, timeoutMs, async (socket, reader) => {
    const info = await negotiate(socket, reader, exportName, NBD_OPT_INFO);
    // ABORT is answered with an ACK and a close; the reader's listeners stay to absorb both.
    socket.end(encodeOption(NBD_OPT_ABORT));
    setTimeout(() => socket.destroy(), ABORT_GRACE_MS).unref();
    return info;
  });
}

async function withConnection<T>(socketPath: string, timeoutMs: number, use: (socket: Socket, reader: HandshakeReader) => Promise<T>): Promise<T> {
  const socket = connect(socketPath);
  const reader = new HandshakeReader(socket);
  const timer = setTimeout(() => reader.fail(new Error(`no NBD handshake from ${socketPath} within ${timeoutMs} ms`)), timeoutMs);
  try {
    await reader.connected;
    return await use(socket, reader);
  } catch (err) {
    socket.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

async function negotiate(socket: Socket, reader: HandshakeReader, exportName: string, option: number): Promise<ExportInfo> {
  const greeting = await reader.read(GREETING_BYTES);
  if (greeting.readBigUInt64BE(0) !== NBD_MAGIC || greeting.readBigUInt64BE(8) !== NBD_OPTS_MAGIC) {
    throw new NbdProtocolError('not an NBD server (bad greeting)');
  }
  const serverFlags = greeting.readUInt16BE(16);
  if ((serverFlags & NBD_FLAG_FIXED_NEWSTYLE) === 0) throw new NbdProtocolError('the NBD server does not speak fixed newstyle');
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(NBD_FLAG_C_FIXED_NEWSTYLE | (serverFlags & NBD_FLAG_NO_ZEROES ? NBD_FLAG_C_NO_ZEROES : 0), 0);
  socket.write(clientFlags);
  socket.write(encodeOption(option, encodeInfoRequest(exportName)));

  const info: Partial<ExportInfo> = { maxPayloadBytes: undefined };
  for (let i = 0; i < MAX_REPLIES_PER_OPTION; i++) {
    const header = decodeOptionReplyHeader(await reader.read(OPTION_REPLY_HEADER_BYTES));
    if (header.dataBytes > MAX_OPTION_REPLY_BYTES) throw new NbdProtocolError(`an option reply of ${header.dataBytes} bytes`);
    const data = header.dataBytes > 0 ? await reader.read(header.dataBytes) : Buffer.alloc(0);
    if (header.option !== option) throw new NbdProtocolError(`a reply to option ${header.option} while negotiating ${option}`);
    if (header.type >= 0x8000_0000) throw new NbdOptionRefusedError(option, header.type, data.toString('utf8'));
    if (header.type === NBD_REP_INFO) {
      applyInfoItem(info, data);
    } else if (header.type === NBD_REP_ACK) {
      if (info.sizeBytes === undefined || info.flags === undefined) throw new NbdProtocolError('the export was acknowledged without its size');
      return { sizeBytes: info.sizeBytes, flags: info.flags, maxPayloadBytes: info.maxPayloadBytes };
    } else {
      throw new NbdProtocolError(`unexpected option reply type ${header.type}`);
    }
  }
  throw new NbdProtocolError(`more than ${MAX_REPLIES_PER_OPTION} replies to one option`);
}

/** Exact-length reads over a socket during the handshake; one read at a time. */
class HandshakeReader {
  readonly connected: Promise<void>;
  readonly #socket: Socket;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #waiter: { bytes: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  #failure: Error | undefined;

  constructor(socket: Socket) {
    this.#socket = socket;
    this.connected = new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    this.connected.catch(() => undefined); // observed by the caller's await
    socket.on('data', this.#onData);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
  }

  read(bytes: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#waiter = { bytes, resolve, reject };
      this.#wake();
    });
  }

  fail(err: Error): void {
    this.#failure ??= err;
    this.#socket.destroy();
    this.#wake();
  }

  /** Stops listening and pauses the socket; returns what was read beyond the handshake. */
  detach(): Buffer {
    this.#socket.off('data', this.#onData);
    this.#socket.off('error', this.#onError);
    this.#socket.off('close', this.#onClose);
    this.#socket.pause();
    const rest = Buffer.concat(this.#chunks, this.#buffered);
    this.#chunks = [];
    this.#buffered = 0;
    return rest;
  }

  readonly #onData = (chunk: Buffer): void => {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    this.#wake();
  };

  readonly #onError = (err: Error): void => {
    this.#failure ??= err;
    this.#wake();
  };

  readonly #onClose = (): void => {
    this.#failure ??= new Error('the NBD server closed the connection during the handshake');
    this.#wake();
  };

  #wake(): void {
    const w = this.#waiter;
    if (w === undefined) return;
    if (this.#buffered >= w.bytes) {
      this.#waiter = undefined;
      const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks, this.#buffered);
      const rest = all.subarray(w.bytes);
      this.#chunks = rest.length > 0 ? [rest] : [];
      this.#buffered = rest.length;
      w.resolve(all.subarray(0, w.bytes));
    } else if (this.#failure !== undefined) {
      this.#waiter = undefined;
      w.reject(this.#failure);
    }
  }
}
