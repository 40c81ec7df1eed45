/**
 * One NBD connection in the transmission phase: requests go out as soon as they are sent
 * (pipelined, each with its own handle), simple replies come back in any order and are matched
 * by handle. READ data is copied straight from the socket's chunks into the request's
 * destination buffer, so a reply costs no allocation.
 *
 * The connection knows nothing of reconnecting: when the socket ends, fails, or the server
 * breaks the protocol, it closes once and hands every unanswered request back, in the order they
 * were sent (nbd-client.ts decides what to do with them).
 */
import type { Socket } from 'node:net';
import { NBD_CMD_DISC, NBD_CMD_READ } from '../../../engine/nbd/protocol.ts';
import type { OpenedConnection } from './nbd-handshake.ts';
import { decodeSimpleReply, encodeRequest, NbdProtocolError, SIMPLE_REPLY_BYTES } from './nbd-wire.ts';
import type { ExportInfo } from './nbd-wire.ts';

export interface NbdRequest {
  command: number;
  offset: number;
  length: number;
  /** WRITE payload (length bytes). */
  data: Buffer | undefined;
  /** READ destination (length bytes). */
  dest: Buffer | undefined;
}

export interface ConnectionEvents<T extends NbdRequest> {
  /** The server answered `request` with `errno` (0: success; READ data is in request.dest). */
  onReply(request: T, errno: number): void;
  /** The connection is gone; `error` says why, undefined for an orderly close. Called once. */
  onClose(error: Error | undefined): void;
}

/** Handles wrap at 2^32; a request would have to stay unanswered for four billion others to collide. */
const HANDLE_LIMIT = 0x1_0000_0000;

export class NbdConnection<T extends NbdRequest> {
  readonly info: ExportInfo;
  readonly #socket: Socket;
  readonly #events: ConnectionEvents<T>;
  /** Unanswered requests by handle; a Map keeps them in the order they were sent. */
  readonly #inFlight = new Map<number, T>();
  #nextHandle = 1;
  #closed = false;
  // Reply parser state: a header being assembled, then READ data being copied.
  readonly #header = Buffer.alloc(SIMPLE_REPLY_BYTES);
  #headerFill = 0;
  #reading: T | undefined;
  #readingHandle = 0;
  #readFill = 0;

  constructor(opened: OpenedConnection, events: ConnectionEvents<T>) {
    this.info = opened.info;
    this.#socket = opened.socket;
    this.#events = events;
    this.#socket.setNoDelay?.(true);
    this.#socket.on('data', this.#onData);
    this.#socket.on('error', (err) => this.#close(err));
    this.#socket.on('close', () => this.#close(new Error('the NBD server closed the connection')));
    this.#socket.resume();
    if (opened.rest.length > 0) this.#onData(opened.rest);
  }

  get closed(): boolean {
    return this.#closed;
  }

  get inFlight(): number {
    return this.#inFlight.size;
  }

  send(request: T): void {
    if (this.#closed) throw new Error('send on a closed NBD connection');
    let handle = this.#nextHandle;
    while (this.#inFlight.has(handle)) handle = (handle + 1) % HANDLE_LIMIT || 1;
    this.#nextHandle = (handle + 1) % HANDLE_LIMIT || 1;
    this.#inFlight.set(handle, request);
    const header = encodeRequest(request.command, handle, request.offset, request.length);
    if (request.data === undefined) {
      this.#socket.write(header);
    } else {
      this.#socket.cork();
      this.#socket.write(header);
      this.#socket.write(request.data);
      this.#socket.uncork();
    }
  }

  /** Unanswered requests in the order they were sent; the connection forgets them. */
  takeUnanswered(): T[] {
    const requests = [...this.#inFlight.values()];
    this.#inFlight.clear();
    return requests;
  }

  /** NBD_CMD_DISC, then close: the server finishes what is in flight and hangs up. */
  disconnect(): void {
    if (this.#closed) return;
    this.#socket.end(encodeRequest(NBD_CMD_DISC, 0, 0, 0));
  }

  destroy(error: Error): void {
    this.#close(error);
  }

  readonly #onData = (chunk: Buffer): void => {
    try {
      let at = 0;
      while (at < chunk.length && !this.#closed) at = this.#reading === undefined ? this.#takeHeader(chunk, at) : this.#takeData(chunk, at);
    } catch (err) {
      this.#close(err as Error);
    }
  };

  #takeHeader(chunk: Buffer, at: number): number {
    const n = Math.min(SIMPLE_REPLY_BYTES - this.#headerFill, chunk.length - at);
    chunk.copy(this.#header, this.#headerFill, at, at + n);
    this.#headerFill += n;
    if (this.#headerFill < SIMPLE_REPLY_BYTES) return at + n;
    this.#headerFill = 0;
    const { errno, handle } = decodeSimpleReply(this.#header);
    const request = this.#inFlight.get(handle);
    if (request === undefined) throw new NbdProtocolError(`a reply for handle ${handle}, which is not in flight`);
    if (request.command === NBD_CMD_READ && errno === 0 && request.length > 0) {
      this.#reading = request;
      this.#readingHandle = handle;
      this.#readFill = 0;
    } else {
      this.#complete(handle, request, errno);
    }
    return at + n;
  }

  #takeData(chunk: Buffer, at: number): number {
    const request = this.#reading!;
    const n = Math.min(request.length - this.#readFill, chunk.length - at);
    chunk.copy(request.dest!, this.#readFill, at, at + n);
    this.#readFill += n;
    if (this.#readFill === request.length) {
      this.#reading = undefined;
      this.#complete(this.#readingHandle, request, 0);
    }
    return at + n;
  }

  #complete(handle: number, request: T, errno: number): void {
    this.#inFlight.delete(handle);
    this.#events.onReply(request, errno);
  }

  #close(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reading = undefined;
    this.#socket.destroy();
    this.#events.onClose(error);
  }
}
