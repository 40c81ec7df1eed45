/**
 * The transmission phase of one NBD connection: parses requests straight out of socket chunks,
 * runs them on the BlockDevice concurrently, and answers each with one socket.write.
 *
 * Parsing. Request headers are read at fixed offsets, from the chunk itself when all 28 bytes
 * are in it, else from a 28-byte scratch buffer that collects the pieces. A WRITE is checked
 * from its header alone (length, flags, read-only, range) before anything is allocated for its
 * payload. A refused WRITE has its payload skipped (never buffered) and is answered with the
 * error, so the stream stays in step. An accepted one reserves its length in the server-wide
 * WriteBudget (waiting, with reading paused, if there is no room); its payload, if it lies whole
 * inside one chunk, is passed to the device as a view (the device copies it before write()
 * returns); one that spans chunks is assembled in a buffer kept for the next WRITE.
 *
 * Flow control. A request holds one of `maxInFlight` slots from its header until its reply is
 * handed to the socket. We stop reading (and keep the unread part of the current chunk) when
 * the slots run out, when READ data waiting to be sent passes REPLY_BACKLOG_MAX_BYTES, when a
 * client that does not read its replies has let REPLY_QUEUE_MAX of them pile up in the socket,
 * or while a WRITE waits for budget; and resume when a request completes, the socket drains or
 * the budget grants. No timers here: while WRITEs wait for budget, the server asks every
 * connection now and then whether its payload moved (checkStalled), and one that stopped in the
 * middle of a payload is disconnected, since its reservation stands in the others' way.
 *
 * Lifetime. Input stops on NBD_CMD_DISC, on end of input, on server shutdown (all graceful:
 * in-flight requests finish and are answered, then the socket is closed) or on a protocol
 * violation (the socket is destroyed at once; late replies are dropped). The BlockDevice is
 * closed exactly once, after the socket has closed and nothing is in flight; `finished`
 * resolves then.
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import type { BlockDevice } from '../block-device.ts';
import type { Logger } from '../logger.ts';
import { nbdErrnoFor, publicMessage } from './errno.ts';
import type { NegotiatedExport } from './handshake.ts';
import {
  BLOCK_STATUS_EXTENTS_MAX,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REQUEST_MAGIC,
  OFFSET_DATA_PREFIX_BYTES,
  OFFSET_HIGH_WORD_LIMIT,
  PAYLOAD_BUFFER_RETAIN_BYTES,
  REPLY_BACKLOG_MAX_BYTES,
  REPLY_QUEUE_MAX,
  REQUEST_HEADER_BYTES,
  SIMPLE_REPLY_BYTES,
  STRUCTURED_HEADER_BYTES,
} from './protocol.ts';
import { OUT_OF_RANGE, TOO_LONG, validateRequest } from './request.ts';
import type { Rejection, RequestLimits, RequestSlot } from './request.ts';
import {
  blockStatusReply,
  simpleReply,
  structuredError,
  structuredNone,
  writeSimpleHeader,
  writeStructuredHeader,
} from './replies.ts';
import { writeUInt64 } from './wire.ts';
import type { BudgetWaiter, WriteBudget } from './write-budget.ts';

export interface TransmissionOptions {
  readonly maxRequestBytes: number;
  readonly maxInFlight: number;
  /** Shared by every connection of the server; at least maxRequestBytes. */
  readonly writeBudget: WriteBudget;
  readonly logger: Logger;
}

/** What the parser is waiting for. */
const HEADER = 0; // the next request header
const PAYLOAD = 1; // the rest of a WRITE payload we will use
const DISCARD = 2; // the rest of a WRITE payload we refused
const STOPPED = 3; // nothing: input is ignored from now on
const AWAIT_BUDGET = 4; // room in the write budget for the WRITE whose header we just read
type ParseState = typeof HEADER | typeof PAYLOAD | typeof DISCARD | typeof STOPPED | typeof AWAIT_BUDGET;

const TWO_POW_32 = 0x1_0000_0000;
const EMPTY = Buffer.alloc(0);

export class TransmissionConnection implements BudgetWaiter {
  /** Resolves once the socket is closed and the device handle released. */
  readonly finished: Promise<void>;
  /** What this connection waits for in the write budget (the current WRITE's length). */
  budgetWantedBytes = 0;

  private readonly socket: Socket;
  private readonly device: BlockDevice;
  private readonly structuredReplies: boolean;
  private readonly allocationContextId: number;
  private readonly maxRequestBytes: number;
  private readonly maxInFlight: number;
  private readonly budget: WriteBudget;
  private readonly logger: Logger;
  /** For validateRequest; built once so that checking a request allocates nothing. */
  private readonly limits: RequestLimits;
  private resolveFinished: () => void = () => {};

  private state: ParseState = HEADER;
  private readonly header = Buffer.allocUnsafe(REQUEST_HEADER_BYTES);
  private headerFill = 0;
  /** The WRITE whose payload is being received or discarded. */
  private current: RequestSlot | null = null;
  private payload: Buffer = EMPTY;
  private payloadFill = 0;
  private discardRemainingBytes = 0;
  /** Why the WRITE being discarded was refused. */
  private discardRejection: Rejection = TOO_LONG;
  /** Reused for WRITE payloads that span chunks, up to PAYLOAD_BUFFER_RETAIN_BYTES. */
  private assembly: Buffer = EMPTY;
  /** WRITE payload bytes received so far (only ever grows), and its value at the last check. */
  private payloadProgress = 0;
  private payloadProgressChecked = -1;

  private readonly freeSlots: RequestSlot[] = [];
  private slotsCreated = 0;
  private inFlight = 0;
  /** Bytes of READ replies allocated and not yet handed to the socket. */
  private readBytesInFlight = 0;
  /**
   * Replies written since the socket's queue was last empty: an upper bound on the replies
   * queued in user space, each of which costs an object beyond its bytes.
   */
  private queuedReplies = 0;

  /** Chunks (or the unread tail of one) received while reading was paused. */
  private readonly stash: Buffer[] = [];
  private inputPaused = false;
  private consuming = false;
  private inputStopped = false;
  private closeRequested = false;
  private socketClosed = false;
  private deviceReleased = false;

  constructor(socket: Socket, negotiated: NegotiatedExport, pending: Buffer[], opts: TransmissionOptions) {
    assert.ok(opts.maxInFlight >= 1 && opts.maxRequestBytes >= 1);
    this.socket = socket;
    this.device = negotiated.device;
    this.structuredReplies = negotiated.structuredReplies;
    this.allocationContextId = negotiated.allocationContextId;
    this.maxRequestBytes = opts.maxRequestBytes;
    this.maxInFlight = opts.maxInFlight;
    this.budget = opts.writeBudget;
    assert.ok(this.budget.capacityBytes >= opts.maxRequestBytes, 'the write budget must hold the largest WRITE');
    this.logger = opts.logger;
    const device = this.device;
    this.limits = {
      maxRequestBytes: opts.maxRequestBytes,
      // Read live: a pool that fails may turn its volumes read-only while we serve them.
      get readOnly() {
        return device.readOnly;
      },
      allocationContextId: negotiated.allocationContextId,
    };
    this.finished = new Promise((resolve) => {
      this.resolveFinished = resolve;
    });
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
    // Bytes the client sent right behind NBD_OPT_GO arrived during the handshake.
    for (const chunk of pending) this.onData(chunk);
    if (socket.readableEnded) this.onEnd();
    if (socket.destroyed) this.onClose();
  }

  /** Stops reading requests, lets in-flight ones finish, then closes. */
  shutdown(): Promise<void> {
    this.stopInput();
    return this.finished;
  }

  // ---- Input ------------------------------------------------------------------------------

  private readonly onData = (chunk: Buffer): void => {
    if (this.state === STOPPED) return;
    if (this.inputPaused || this.stash.length > 0) {
      this.stash.push(chunk);
      return;
    }
    try {
      this.consume(chunk);
    } catch (err) {
      this.internalError(err);
    }
  };

  private consume(chunk: Buffer): void {
    this.consuming = true;
    try {
      let at = 0;
      while (at < chunk.length && this.state !== STOPPED) {
        if (this.state === AWAIT_BUDGET || (this.state === HEADER && !this.canAdmit())) {
          this.stash.unshift(chunk.subarray(at));
          this.pauseInput();
          return;
        }
        if (this.state === HEADER) at = this.takeHeader(chunk, at);
        else if (this.state === PAYLOAD) at = this.takePayload(chunk, at);
        else at = this.skipPayload(chunk, at);
      }
    } finally {
      this.consuming = false;
    }
  }

  /** May the next request header be read? */
  private canAdmit(): boolean {
    if (this.inFlight >= this.maxInFlight) return false;
    const socket = this.socket;
    if (this.readBytesInFlight + socket.writableLength >= REPLY_BACKLOG_MAX_BYTES) return false;
    // A client that sends requests but never reads replies: its small replies pile up in the
    // socket's queue. Only while a 'drain' is due, since that event is what resumes us.
    return this.queuedReplies < REPLY_QUEUE_MAX || !socket.writableNeedDrain;
  }

  /** May parsing go on from the current state? */
  private canProceed(): boolean {
    if (this.state === AWAIT_BUDGET) return false;
    return this.state !== HEADER || this.canAdmit();
  }

  private pauseInput(): void {
    if (this.inputPaused) return;
    this.inputPaused = true;
    this.socket.pause();
  }

  /** Called whenever a slot frees up or the socket drains. */
  private maybeResume(): void {
    if (!this.inputPaused || this.consuming || this.inputStopped || !this.canProceed()) return;
    this.inputPaused = false;
    // consume() may pause again or stop input; whatever it leaves stays stashed, in order.
    while (this.readingActive()) {
      const chunk = this.stash.shift();
      if (chunk === undefined) break;
      this.consume(chunk);
    }
    if (this.readingActive()) this.socket.resume();
  }

  private readingActive(): boolean {
    return !this.inputPaused && !this.inputStopped;
  }

  private takeHeader(chunk: Buffer, at: number): number {
    const available = chunk.length - at;
    if (this.headerFill === 0 && available >= REQUEST_HEADER_BYTES) {
      this.onRequestHeader(chunk, at);
      return at + REQUEST_HEADER_BYTES;
    }
    const n = Math.min(REQUEST_HEADER_BYTES - this.headerFill, available);
    chunk.copy(this.header, this.headerFill, at, at + n);
    this.headerFill += n;
    if (this.headerFill === REQUEST_HEADER_BYTES) {
      this.headerFill = 0;
      this.onRequestHeader(this.header, 0);
    }
    return at + n;
  }

  /** Header layout: magic u32, flags u16, type u16, handle u64, offset u64, length u32. */
  private onRequestHeader(buf: Buffer, at: number): void {
    if (buf.readUInt32BE(at) !== NBD_REQUEST_MAGIC) {
      this.protocolViolation('bad request magic');
      return;
    }
    const type = buf.readUInt16BE(at + 6);
    if (type === NBD_CMD_DISC) {
      this.stopInput();
      return;
    }
    const slot = this.acquireSlot();
    slot.type = type;
    slot.flags = buf.readUInt16BE(at + 4);
    slot.handleHi = buf.readUInt32BE(at + 8);
    slot.handleLo = buf.readUInt32BE(at + 12);
    const offsetHi = buf.readUInt32BE(at + 16);
    slot.offset = offsetHi < OFFSET_HIGH_WORD_LIMIT ? offsetHi * TWO_POW_32 + buf.readUInt32BE(at + 20) : -1;
    slot.lengthBytes = buf.readUInt32BE(at + 24);
    if (type !== NBD_CMD_WRITE || slot.lengthBytes === 0) {
      this.dispatch(slot, EMPTY);
      return;
    }
    this.current = slot;
    const rejection = this.checkWriteHeader(slot);
    if (rejection !== null) {
      this.discardRejection = rejection;
      this.discardRemainingBytes = slot.lengthBytes;
      this.state = DISCARD;
      return;
    }
    this.budgetWantedBytes = slot.lengthBytes;
    if (this.budget.reserveOrWait(this)) {
      this.startPayload(slot);
    } else {
      this.state = AWAIT_BUDGET;
      this.pauseInput();
    }
  }

  /**
   * Everything that can refuse a WRITE, decided before its payload arrives, so that nothing is
   * allocated or reserved for a payload we would throw away. The range is checked against the
   * size now; the device checks it again (a volume only grows while open).
   */
  private checkWriteHeader(slot: RequestSlot): Rejection | null {
    if (slot.lengthBytes > this.maxRequestBytes) return TOO_LONG;
    const rejection = validateRequest(slot, this.limits);
    if (rejection !== null) return rejection;
    return slot.offset + slot.lengthBytes > this.device.sizeBytes ? OUT_OF_RANGE : null;
  }

  private startPayload(slot: RequestSlot): void {
    slot.budgetBytes = slot.lengthBytes;
    this.payloadFill = 0;
    this.state = PAYLOAD;
  }

  /** The budget reserved our WRITE's length (called from another connection's release). */
  grantBudget(): void {
    const slot = this.current;
    if (this.state !== AWAIT_BUDGET || slot === null) {
      // Cannot happen (we cancel before leaving AWAIT_BUDGET); give the bytes straight back.
      this.budget.release(this.budgetWantedBytes);
      return;
    }
    this.startPayload(slot);
    try {
      this.maybeResume();
    } catch (err) {
      this.internalError(err);
    }
  }

  private takePayload(chunk: Buffer, at: number): number {
    const slot = this.current;
    assert.ok(slot !== null);
    const available = chunk.length - at;
    if (this.payloadFill === 0 && available >= slot.lengthBytes) {
      // The whole payload is in this chunk: the device gets a view, nothing is copied here.
      this.endPayload(slot, chunk.subarray(at, at + slot.lengthBytes));
      return at + slot.lengthBytes;
    }
    if (this.payloadFill === 0) this.payload = this.payloadBuffer(slot.lengthBytes);
    const n = Math.min(slot.lengthBytes - this.payloadFill, available);
    chunk.copy(this.payload, this.payloadFill, at, at + n);
    this.payloadFill += n;
    this.payloadProgress += n;
    if (this.payloadFill === slot.lengthBytes) {
      this.endPayload(slot, this.payload.subarray(0, slot.lengthBytes));
      this.payload = EMPTY; // A per-request buffer is dropped; the retained one lives on.
    }
    return at + n;
  }

  private endPayload(slot: RequestSlot, payload: Buffer): void {
    this.current = null;
    this.payloadFill = 0;
    this.state = HEADER;
    // Checked when the header came (checkWriteHeader); the device checks the rest.
    this.start(slot, payload);
  }

  /** A buffer of at least `lengthBytes`; small ones are kept since write() copies at once. */
  private payloadBuffer(lengthBytes: number): Buffer {
    if (this.assembly.length >= lengthBytes) return this.assembly;
    const buf = Buffer.allocUnsafe(lengthBytes);
    if (lengthBytes <= PAYLOAD_BUFFER_RETAIN_BYTES) this.assembly = buf;
    return buf;
  }

  private skipPayload(chunk: Buffer, at: number): number {
    const slot = this.current;
    assert.ok(slot !== null);
    const n = Math.min(this.discardRemainingBytes, chunk.length - at);
    this.discardRemainingBytes -= n;
    if (this.discardRemainingBytes === 0) {
      this.current = null;
      this.state = HEADER;
      this.reject(slot, this.discardRejection);
    }
    return at + n;
  }

  // ---- Requests ---------------------------------------------------------------------------

  private acquireSlot(): RequestSlot {
    this.inFlight++;
    const slot = this.freeSlots.pop();
    if (slot !== undefined) return slot;
    assert.ok(this.slotsCreated < this.maxInFlight, 'admitted a request without a free slot');
    this.slotsCreated++;
    const created: RequestSlot = {
      type: 0,
      flags: 0,
      handleHi: 0,
      handleLo: 0,
      offset: 0,
      lengthBytes: 0,
      reply: null,
      budgetBytes: 0,
      onDone: () => this.complete(created),
      onFail: (err: unknown) => this.fail(created, err),
    };
    return created;
  }

  private dispatch(slot: RequestSlot, payload: Buffer): void {
    const rejection = validateRequest(slot, this.limits);
    if (rejection !== null) {
      this.reject(slot, rejection);
      return;
    }
    if (slot.type === NBD_CMD_BLOCK_STATUS) {
      this.blockStatus(slot);
      return;
    }
    if (slot.type === NBD_CMD_READ && this.structuredReplies && slot.lengthBytes === 0) {
      // OFFSET_DATA must carry at least one byte; an empty read is answered with NONE.
      this.send(structuredNone(slot));
      this.release(slot);
      return;
    }
    this.start(slot, payload);
  }

  /** Hands a validated request to the device; its callbacks answer it. */
  private start(slot: RequestSlot, payload: Buffer): void {
    let pending: Promise<void>;
    try {
      pending = this.invoke(slot, payload);
    } catch (err) {
      // A device that throws instead of rejecting is answered the same way.
      this.fail(slot, err);
      return;
    }
    pending.then(slot.onDone, slot.onFail);
  }

  /** Starts the device operation of a validated READ, WRITE, FLUSH, TRIM or WRITE_ZEROES. */
  private invoke(slot: RequestSlot, payload: Buffer): Promise<void> {
    const fua = (slot.flags & NBD_CMD_FLAG_FUA) !== 0;
    switch (slot.type) {
      case NBD_CMD_READ:
        return this.device.read(slot.offset, this.prepareReadReply(slot));
      case NBD_CMD_WRITE:
        return this.device.write(slot.offset, payload, fua);
      case NBD_CMD_FLUSH:
        return this.device.flush();
      case NBD_CMD_TRIM:
        return this.device.trim(slot.offset, slot.lengthBytes, fua);
      case NBD_CMD_WRITE_ZEROES: {
        // Zeroing is metadata-only in the engine, hence always fast: FAST_ZERO needs nothing.
        const mayUnmap = (slot.flags & NBD_CMD_FLAG_NO_HOLE) === 0;
        return this.device.writeZeroes(slot.offset, slot.lengthBytes, { fua, mayUnmap });
      }
      default:
        return assert.fail(`command ${slot.type} passed validation but has no handler`);
    }
  }

  /**
   * Allocates the whole READ reply, header filled in, and returns its data part for the device
   * to read into. The device contract (read() fills all of dest) is what keeps uninitialised
   * memory from ever reaching a client.
   */
  private prepareReadReply(slot: RequestSlot): Buffer {
    const headerBytes = this.structuredReplies
      ? STRUCTURED_HEADER_BYTES + OFFSET_DATA_PREFIX_BYTES
      : SIMPLE_REPLY_BYTES;
    const reply = Buffer.allocUnsafe(headerBytes + slot.lengthBytes);
    if (this.structuredReplies) {
      const payloadBytes = OFFSET_DATA_PREFIX_BYTES + slot.lengthBytes;
      const chunk = { flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, payloadBytes };
      writeStructuredHeader(reply, slot, chunk);
      writeUInt64(reply, slot.offset, STRUCTURED_HEADER_BYTES);
    } else {
      writeSimpleHeader(reply, slot, 0);
    }
    slot.reply = reply;
    this.readBytesInFlight += reply.length;
    return reply.subarray(headerBytes);
  }

  /** Synchronous: the allocation map comes from the index in memory. */
  private blockStatus(slot: RequestSlot): void {
    const maxExtents = (slot.flags & NBD_CMD_FLAG_REQ_ONE) !== 0 ? 1 : BLOCK_STATUS_EXTENTS_MAX;
    let reply: Buffer;
    try {
      const extents = this.device.blockStatus(slot.offset, slot.lengthBytes, maxExtents);
      assert.ok(extents.length <= maxExtents, 'blockStatus returned too many extents');
      reply = blockStatusReply(slot, this.allocationContextId, extents, slot.lengthBytes);
    } catch (err) {
      this.fail(slot, err);
      return;
    }
    this.send(reply);
    this.release(slot);
  }

  private complete(slot: RequestSlot): void {
    try {
      this.send(slot.reply ?? simpleReply(slot, 0));
      this.release(slot);
    } catch (err) {
      this.internalError(err);
    }
  }

  private fail(slot: RequestSlot, err: unknown): void {
    try {
      const errno = nbdErrnoFor(err, this.logger);
      this.logger.debug({ type: slot.type, offset: slot.offset, errno, err: publicMessage(err) }, 'NBD request failed');
      this.answerError(slot, errno, publicMessage(err));
    } catch (internal) {
      this.internalError(internal);
    }
  }

  private reject(slot: RequestSlot, rejection: Rejection): void {
    this.logger.debug({ type: slot.type, errno: rejection.errno, reason: rejection.message }, 'NBD request refused');
    this.answerError(slot, rejection.errno, rejection.message);
  }

  private answerError(slot: RequestSlot, errno: number, message: string): void {
    this.send(this.structuredReplies ? structuredError(slot, errno, message) : simpleReply(slot, errno));
    this.release(slot);
  }

  private send(buf: Buffer): void {
    const socket = this.socket;
    // After a hard disconnect late replies have nowhere to go; dropping them is correct.
    if (socket.destroyed || !socket.writable) return;
    if (socket.writableLength === 0) this.queuedReplies = 0;
    this.queuedReplies++;
    socket.write(buf);
  }

  private release(slot: RequestSlot): void {
    if (slot.reply !== null) {
      this.readBytesInFlight -= slot.reply.length;
      slot.reply = null;
    }
    this.freeSlots.push(slot);
    this.inFlight--;
    assert.ok(this.inFlight >= 0 && this.readBytesInFlight >= 0);
    this.releaseBudget(slot);
    if (this.inputStopped) this.maybeFinish();
    else this.maybeResume();
  }

  /** A bug in our own completion path: never let it escape into the event loop. */
  private internalError(err: unknown): void {
    this.logger.error({ err }, 'internal error in NBD connection; closing it');
    this.protocolViolation('internal error');
  }

  // ---- Lifetime ---------------------------------------------------------------------------

  private readonly onEnd = (): void => {
    this.stopInput();
  };

  private readonly onDrain = (): void => {
    this.queuedReplies = 0;
    try {
      this.maybeResume();
    } catch (err) {
      this.internalError(err);
    }
  };

  /**
   * Called by the server at intervals while other WRITEs wait for budget. A client whose payload
   * did not move since the previous call keeps a reservation it is not using, in the way of the
   * others: it is disconnected (true). Idle between requests is fine, and so is waiting on us.
   */
  checkStalled(): boolean {
    if (this.state !== PAYLOAD || this.inputStopped) {
      this.payloadProgressChecked = -1;
      return false;
    }
    if (this.payloadProgressChecked === this.payloadProgress) {
      this.protocolViolation('client stalled in the middle of a WRITE payload while other writes wait for memory');
      return true;
    }
    this.payloadProgressChecked = this.payloadProgress;
    return false;
  }

  /** Forgets the last check: contention is over, and the next round starts afresh. */
  resetStallCheck(): void {
    this.payloadProgressChecked = -1;
  }

  private readonly onClose = (): void => {
    if (this.socketClosed) return;
    this.socketClosed = true;
    this.stopInput();
  };

  /** No more requests: DISC, end of input, shutdown or socket closed. In-flight ones finish. */
  private stopInput(): void {
    if (!this.inputStopped) {
      this.inputStopped = true;
      const awaitingBudget = this.state === AWAIT_BUDGET;
      this.state = STOPPED;
      this.stash.length = 0;
      this.payload = EMPTY;
      const partial = this.current;
      if (partial !== null) {
        // The client left in the middle of a WRITE payload: nothing to run, nobody to answer.
        this.current = null;
        this.freeSlots.push(partial);
        this.inFlight--;
        if (awaitingBudget) this.budget.cancel(this);
        this.releaseBudget(partial);
      }
      // Keep draining the socket so a client hang-up is noticed; the bytes are ignored.
      if (this.inputPaused && !this.socket.destroyed) this.socket.resume();
      this.inputPaused = false;
    }
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (!this.inputStopped || this.inFlight > 0) return;
    if (!this.socketClosed) {
      if (!this.closeRequested) {
        this.closeRequested = true;
        this.socket.destroySoon(); // Flushes the replies already written, then closes.
      }
      return;
    }
    this.releaseDevice();
  }

  private releaseBudget(slot: RequestSlot): void {
    const bytes = slot.budgetBytes;
    if (bytes === 0) return;
    slot.budgetBytes = 0;
    // May grant other connections' waiting WRITEs, synchronously.
    this.budget.release(bytes);
  }

  private protocolViolation(reason: string): void {
    this.logger.warn({ reason }, 'closing NBD connection');
    this.closeRequested = true;
    this.socket.destroy();
    // 'close' follows; requests still in flight finish into the void, then the device closes.
    this.stopInput();
  }

  private releaseDevice(): void {
    if (this.deviceReleased) return;
    this.deviceReleased = true;
    try {
      this.device.close();
    } catch (err) {
      this.logger.error({ err }, 'closing the NBD export failed');
    }
    this.resolveFinished();
  }
}
