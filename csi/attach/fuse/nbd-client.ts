/**
 * The FUSE server's NBD client: one pipelined connection to the engine that survives engine
 * restarts without losing an acknowledged write.
 *
 * Requests wait in one FIFO queue until they can be sent, and are then in flight on the
 * connection until answered. When the connection drops:
 *
 *   1. every unanswered request goes back to the front of the queue, in the order it was sent;
 *   2. the client reconnects with backoff (50 ms doubling to 2 s), forever, until closed;
 *   3. on a new connection it first replays the ReplayLog (writes acknowledged since the last
 *      completed FLUSH: the engine may have lost them with its memory), in waves that never
 *      reorder overlapping writes, and only then sends the queue, in order;
 *   4. meanwhile new requests queue behind the others. If the engine is not back within the
 *      reconnect timeout (120 s by default), every queued request fails with EIO, and so does
 *      every new one until a connection is made again.
 *
 * The replay log is bounded (64 MiB by default): past half the bound the client sends a FLUSH
 * of its own, which lets the log drop what it covered, and a WRITE that would take the log over
 * the bound waits for it.
 *
 * Ordering: the kernel never depends on the order of two requests it has in flight at once, so
 * re-sending in-flight requests in any order is allowed; but a request sent after another one
 * was answered must be applied after it. Replay-before-queue, wave by wave, keeps that.
 */
import {
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
} from '../../../engine/nbd/protocol.ts';
import { BlockIoError } from './block-backend.ts';
import type { BlockBackend } from './block-backend.ts';
import { EIO, EOPNOTSUPP, EROFS, ESHUTDOWN } from './fuse-abi.ts';
import { NbdConnection } from './nbd-connection.ts';
import type { NbdRequest } from './nbd-connection.ts';
import { openConnection, queryExport } from './nbd-handshake.ts';
import type { OpenedConnection } from './nbd-handshake.ts';
import type { ExportInfo } from './nbd-wire.ts';
import { mutationCost, ReplayLog, replayWaves } from './replay-log.ts';

export const DEFAULT_RECONNECT_TIMEOUT_MS = 120_000;
export const DEFAULT_REPLAY_LIMIT_BYTES = 64 * 1024 * 1024;
const RECONNECT_DELAY_INITIAL_MS = 50;
const RECONNECT_DELAY_MAX_MS = 2_000;
/** How long close() waits for its final FLUSH. */
const CLOSE_FLUSH_TIMEOUT_MS = 30_000;

/** Linux errno values the NBD protocol shares (NBD's own errno table uses the same numbers). */
const KNOWN_ERRNO: ReadonlySet<number> = new Set([1, 5, 12, 22, 28, 75, 95, 108]);


export interface ClientLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface NbdClientOptions {
  socketPath: string;
  exportName: string;
  logger: ClientLogger;
  reconnectTimeoutMs?: number;
  replayLimitBytes?: number;
  /** Told when a new connection reports another export size. */
  onSizeChange?: (sizeBytes: number) => void;
}

/** How the link to the engine is: what `braid-fuse` reports on its control socket. */
export type LinkState = 'connected' | 'reconnecting' | 'failed' | 'closed';

export interface ClientStatus {
  state: LinkState;
  sizeBytes: number;
  /** Acknowledged mutations not yet covered by a FLUSH. */
  replayBytes: number;
  replayEntries: number;
  inFlight: number;
  queued: number;
  reconnects: number;
}

type Kind = 'external' | 'replay' | 'room-flush';

interface ClientRequest extends NbdRequest {
  kind: Kind;
  /** For external requests: settle the caller's promise. For replay: errno, or -1 when lost. */
  settle(errno: number): void;
  /** For FLUSH: the replay log's mark when it was sent. */
  flushMark: number;
  /** For mutations: bytes counted against the replay bound while in flight. */
  cost: number;
}

type Phase = 'ready' | 'replaying' | 'disconnected' | 'closed';

export class NbdClient implements BlockBackend {
  readonly #opts: NbdClientOptions;
  readonly #log: ClientLogger;
  readonly #reconnectTimeoutMs: number;
  readonly #replayLimitBytes: number;
  readonly #replay = new ReplayLog();
  #info: ExportInfo;
  #conn: NbdConnection<ClientRequest> | undefined;
  #phase: Phase = 'ready';
  /** Disconnected for longer than the reconnect timeout: requests fail at once until a connection is back. */
  #failed = false;
  /** The server said ESHUTDOWN: send nothing more on this connection. */
  #draining = false;
  #queue: ClientRequest[] = [];
  #inFlightMutationBytes = 0;
  #roomFlushInFlight = false;
  #failTimer: NodeJS.Timeout | undefined;
  #reconnecting = false;
  #reconnects = 0;

  private constructor(opts: NbdClientOptions, opened: OpenedConnection) {
    this.#opts = opts;
    this.#log = opts.logger;
    this.#reconnectTimeoutMs = opts.reconnectTimeoutMs ?? DEFAULT_RECONNECT_TIMEOUT_MS;
    this.#replayLimitBytes = opts.replayLimitBytes ?? DEFAULT_REPLAY_LIMIT_BYTES;
    this.#info = opened.info;
    this.#adopt(opened);
  }

  /** Connects once, without retrying: a first connection that fails is an attach that fails. */
  static async open(opts: NbdClientOptions): Promise<NbdClient> {
    return new NbdClient(opts, await openConnection(opts.socketPath, opts.exportName));
  }

  get sizeBytes(): number {
    return this.#info.sizeBytes;
  }

  get readOnly(): boolean {
    return (this.#info.flags & NBD_FLAG_READ_ONLY) !== 0;
  }

  get canWriteZeroes(): boolean {
    return (this.#info.flags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0;
  }

  /** The largest READ/WRITE the server takes, when it said. */
  get maxPayloadBytes(): number | undefined {
    return this.#info.maxPayloadBytes;
  }

  status(): ClientStatus {
    const state: LinkState = this.#phase === 'closed' ? 'closed' : this.#phase === 'ready' ? 'connected' : this.#failed ? 'failed' : 'reconnecting';
    return {
      state,
      sizeBytes: this.#info.sizeBytes,
      replayBytes: this.#replay.bytes,
      replayEntries: this.#replay.size,
      inFlight: this.#conn?.inFlight ?? 0,
      queued: this.#queue.length,
      reconnects: this.#reconnects,
    };
  }

  /** Reads `dest.length` bytes at `offset` into `dest`. */
  read(offset: number, dest: Buffer): Promise<void> {
    return this.#submit(NBD_CMD_READ, offset, dest.length, undefined, dest);
  }

  /** Writes `data` at `offset`. The client keeps `data` (for a replay) until a FLUSH covers it: do not reuse it. */
  write(offset: number, data: Buffer): Promise<void> {
    if (this.readOnly) return Promise.reject(new BlockIoError(EROFS, 'the export is read-only'));
    return this.#submit(NBD_CMD_WRITE, offset, data.length, data, undefined);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    if (this.readOnly) return Promise.reject(new BlockIoError(EROFS, 'the export is read-only'));
    if (!this.canWriteZeroes) return Promise.reject(new BlockIoError(EOPNOTSUPP, 'the server does not zero ranges'));
    return this.#submit(NBD_CMD_WRITE_ZEROES, offset, length, undefined, undefined);
  }

  trim(offset: number, length: number): Promise<void> {
    // A trim is advice: a server that takes none loses nothing by not hearing it.
    if ((this.#info.flags & NBD_FLAG_SEND_TRIM) === 0 || this.readOnly) return Promise.resolve();
    return this.#submit(NBD_CMD_TRIM, offset, length, undefined, undefined);
  }

  /** Makes every write acknowledged so far durable. */
  flush(): Promise<void> {
    if ((this.#info.flags & NBD_FLAG_SEND_FLUSH) === 0) {
      // A server without a cache to flush: what it acknowledged is already durable.
      this.#replay.release(this.#replay.mark);
      return Promise.resolve();
    }
    return this.#submit(NBD_CMD_FLUSH, 0, 0, undefined, undefined);
  }

  /** The export's size as the engine reports it now (NBD_OPT_INFO on a short second connection). */
  async querySize(): Promise<number> {
    const info = await queryExport(this.#opts.socketPath, this.#opts.exportName);
    this.#noteSize(info.sizeBytes);
    return info.sizeBytes;
  }

  /** A final FLUSH (bounded), then NBD_CMD_DISC. Queued requests fail with ESHUTDOWN. */
  async close(): Promise<void> {
    if (this.#phase === 'closed') return;
    if (this.#phase === 'ready') {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((_, reject) => (timer = setTimeout(() => reject(new Error('timed out')), CLOSE_FLUSH_TIMEOUT_MS)));
      try {
        await Promise.race([this.flush(), timeout]);
      } catch (err) {
        this.#log.warn({ err }, 'the final NBD flush failed');
      } finally {
        clearTimeout(timer);
      }
    }
    if (this.#replay.size > 0) this.#log.warn({ entries: this.#replay.size, bytes: this.#replay.bytes }, 'closing with acknowledged writes no flush covered');
    this.#phase = 'closed';
    clearTimeout(this.#failTimer);
    this.#failQueued(ESHUTDOWN, 'the NBD client is closing');
    this.#conn?.disconnect();
  }

  // ---- Sending ------------------------------------------------------------------------------

  #submit(command: number, offset: number, length: number, data: Buffer | undefined, dest: Buffer | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.#failed || this.#phase === 'closed') {
        reject(this.#unavailable());
        return;
      }
      const request: ClientRequest = {
        kind: 'external',
        command,
        offset,
        length,
        data,
        dest,
        flushMark: 0,
        cost: isMutation(command) ? mutationCost(data) : 0,
        settle: (errno) => (errno === 0 ? resolve() : reject(new BlockIoError(errno, `NBD ${commandName(command)} failed with errno ${errno}`))),
      };
      this.#queue.push(request);
      this.#pump();
    });
  }

  /** Sends queued requests in order while connected, and while the replay bound allows. */
  #pump(): void {
    const conn = this.#conn;
    if (conn === undefined || this.#phase !== 'ready' || this.#draining) return;
    while (this.#queue.length > 0) {
      const request = this.#queue[0]!;
      if (isMutation(request.command) && !this.#hasRoomFor(request)) {
        this.#flushForRoom(conn);
        return;
      }
      this.#queue.shift();
      this.#send(conn, request);
    }
  }

  #send(conn: NbdConnection<ClientRequest>, request: ClientRequest): void {
    if (request.command === NBD_CMD_FLUSH) request.flushMark = this.#replay.mark;
    if (request.kind === 'external') this.#inFlightMutationBytes += request.cost;
    conn.send(request);
  }

  #hasRoomFor(request: ClientRequest): boolean {
    const used = this.#replay.bytes + this.#inFlightMutationBytes;
    return used === 0 || used + request.cost <= this.#replayLimitBytes;
  }

  /** A FLUSH of our own, so that the replay log may drop what it covers. */
  #flushForRoom(conn: NbdConnection<ClientRequest>): void {
    if (this.#roomFlushInFlight || this.#replay.size === 0) return; // wait for in-flight writes instead
    this.#roomFlushInFlight = true;
    this.#send(conn, internalRequest('room-flush', NBD_CMD_FLUSH, 0, 0, undefined, () => undefined));
  }

  // ---- Replies ------------------------------------------------------------------------------

  #onReply(request: ClientRequest, errno: number): void {
    if (request.kind === 'replay') {
      request.settle(errno);
      return;
    }
    if (request.kind === 'room-flush') {
      this.#roomFlushInFlight = false;
      if (errno === 0) this.#replay.release(request.flushMark);
      else this.#failWaitingMutations(errno);
      this.#pump();
      return;
    }
    this.#inFlightMutationBytes -= request.cost;
    if (errno === ESHUTDOWN) {
      // The server stops; the request was not done. It goes again on the next connection.
      this.#draining = true;
      this.#queue.unshift(request);
      return;
    }
    if (errno === 0) {
      if (isMutation(request.command)) this.#recordAck(request);
      else if (request.command === NBD_CMD_FLUSH) this.#replay.release(request.flushMark);
    }
    request.settle(KNOWN_ERRNO.has(errno) || errno === 0 ? errno : EIO);
    this.#pump();
  }

  /**
   * Keeps an acknowledged mutation for a replay. Past half the bound, a FLUSH of our own starts
   * in the background, so that a stream of writes rarely has to stop and wait for one.
   */
  #recordAck(request: ClientRequest): void {
    this.#replay.record(request.command, request.offset, request.length, request.data);
    if (this.#conn !== undefined && this.#phase === 'ready' && this.#replay.bytes >= this.#replayLimitBytes / 2) this.#flushForRoom(this.#conn);
  }

  /** The room flush failed: the writes waiting for it fail too, rather than wait for ever. */
  #failWaitingMutations(errno: number): void {
    this.#log.error({ errno }, 'the engine failed a flush; failing the writes that waited for it');
    const waiting = this.#queue.filter((r) => isMutation(r.command));
    this.#queue = this.#queue.filter((r) => !isMutation(r.command));
    for (const r of waiting) r.settle(KNOWN_ERRNO.has(errno) ? errno : EIO);
  }

  // ---- Connection loss and reconnect --------------------------------------------------------

  #adopt(opened: OpenedConnection): NbdConnection<ClientRequest> {
    const conn: NbdConnection<ClientRequest> = new NbdConnection<ClientRequest>(opened, {
      onReply: (request, errno) => this.#onReply(request, errno),
      onClose: (error) => this.#onClose(conn, error),
    });
    this.#conn = conn;
    this.#draining = false;
    this.#noteSize(opened.info.sizeBytes);
    this.#info = opened.info;
    return conn;
  }

  #onClose(conn: NbdConnection<ClientRequest>, error: Error | undefined): void {
    if (conn !== this.#conn) return;
    this.#conn = undefined;
    this.#inFlightMutationBytes = 0;
    this.#roomFlushInFlight = false;
    const unanswered = conn.takeUnanswered();
    for (const r of unanswered) if (r.kind === 'replay') r.settle(-1);
    this.#queue.unshift(...unanswered.filter((r) => r.kind === 'external'));
    if (this.#phase === 'closed') {
      this.#failQueued(ESHUTDOWN, 'the NBD client is closed');
      return;
    }
    this.#log.warn({ err: error, unanswered: unanswered.length, replayBytes: this.#replay.bytes }, 'lost the NBD connection to the engine; reconnecting');
    this.#phase = 'disconnected';
    if (!this.#failed) this.#failTimer ??= setTimeout(() => this.#giveUp(), this.#reconnectTimeoutMs);
    void this.#reconnectLoop();
  }

  /** The reconnect timeout passed: what waits fails with EIO, and so will new requests until a connection is made. */
  #giveUp(): void {
    this.#failTimer = undefined;
    if (this.#phase === 'ready' || this.#phase === 'closed') return;
    this.#failed = true;
    this.#log.error({ timeoutMs: this.#reconnectTimeoutMs, queued: this.#queue.length }, 'the engine is still unreachable: failing I/O with EIO until it is back');
    this.#failQueued(EIO, 'the engine is unreachable');
  }

  async #reconnectLoop(): Promise<void> {
    if (this.#reconnecting) return;
    this.#reconnecting = true;
    let delayMs = RECONNECT_DELAY_INITIAL_MS;
    let attempts = 0;
    try {
      while (!this.#closed()) {
        await sleep(delayMs);
        if (this.#closed()) return;
        attempts++;
        let conn: NbdConnection<ClientRequest>;
        try {
          conn = this.#adopt(await openConnection(this.#opts.socketPath, this.#opts.exportName));
        } catch (err) {
          if (attempts === 1 || attempts % 30 === 0) this.#log.warn({ err, attempts }, 'cannot reconnect to the engine yet');
          delayMs = Math.min(delayMs * 2, RECONNECT_DELAY_MAX_MS);
          continue;
        }
        if (this.#closed()) {
          conn.disconnect();
          return;
        }
        this.#phase = 'replaying';
        if (!(await this.#replayOn(conn))) {
          // Lost again while replaying (#onClose saw it): the log is intact, start over.
          delayMs = RECONNECT_DELAY_INITIAL_MS;
          continue;
        }
        if (this.#closed()) return;
        this.#phase = 'ready';
        this.#failed = false;
        clearTimeout(this.#failTimer);
        this.#failTimer = undefined;
        this.#reconnects++;
        this.#log.info({ attempts, queued: this.#queue.length, replayEntries: this.#replay.size }, 'reconnected to the engine');
        this.#pump();
        return;
      }
    } finally {
      this.#reconnecting = false;
    }
  }

  /** Sends the replay log again, wave by wave; false if the connection dropped meanwhile. */
  async #replayOn(conn: NbdConnection<ClientRequest>): Promise<boolean> {
    const entries = this.#replay.entries();
    if (entries.length === 0) return !conn.closed;
    let failures = 0;
    for (const wave of replayWaves(entries)) {
      const results = await Promise.all(
        wave.map(
          (m) =>
            new Promise<number>((resolve) => {
              if (conn.closed) resolve(-1);
              else conn.send(internalRequest('replay', m.command, m.offset, m.length, m.data, resolve));
            }),
        ),
      );
      if (results.includes(-1) || conn.closed) return false;
      failures += results.filter((errno) => errno !== 0).length;
    }
    // A replayed write the engine refuses is lost: nothing can be done but say so.
    if (failures > 0) this.#log.error({ failures, entries: entries.length }, 'the engine refused writes replayed after a reconnect');
    else this.#log.info({ entries: entries.length, bytes: this.#replay.bytes }, 'replayed writes not yet flushed');
    return true;
  }

  /** A method, not a field test, because the phase changes across the awaits that call it. */
  #closed(): boolean {
    return this.#phase === 'closed';
  }

  #failQueued(errno: number, why: string): void {
    const queued = this.#queue;
    this.#queue = [];
    for (const r of queued) r.settle(errno);
    if (queued.length > 0) this.#log.warn({ failed: queued.length, errno }, why);
  }

  #unavailable(): BlockIoError {
    return this.#phase === 'closed' ? new BlockIoError(ESHUTDOWN, 'the NBD client is closed') : new BlockIoError(EIO, 'the engine is unreachable');
  }

  #noteSize(sizeBytes: number): void {
    if (sizeBytes === this.#info.sizeBytes) return;
    this.#info = { ...this.#info, sizeBytes };
    this.#opts.onSizeChange?.(sizeBytes);
  }
}

function internalRequest(kind: Kind, command: number, offset: number, length: number, data: Buffer | undefined, settle: (errno: number) => void): ClientRequest {
  return { kind, command, offset, length, data, dest: undefined, flushMark: 0, cost: 0, settle };
}

function isMutation(command: number): boolean {
  return command === NBD_CMD_WRITE || command === NBD_CMD_WRITE_ZEROES || command === NBD_CMD_TRIM;
}

function commandName(command: number): string {
  switch (command) {
    case NBD_CMD_READ:
      return 'READ';
    case NBD_CMD_WRITE:
      return 'WRITE';
    case NBD_CMD_FLUSH:
      return 'FLUSH';
    case NBD_CMD_TRIM:
      return 'TRIM';
    case NBD_CMD_WRITE_ZEROES:
      return 'WRITE_ZEROES';
    default:
      return `command ${command}`;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
