/**
 * A small NBD client for tests, written from the public protocol document (NetworkBlockDevice/nbd
 * doc/proto.md) and independent of the engine's own code, so that the two cannot share a
 * misunderstanding. It speaks fixed newstyle, enters transmission with NBD_OPT_GO and uses
 * simple replies only (no NBD_OPT_STRUCTURED_REPLY), which makes every reply 16 bytes plus READ
 * data and every error a plain errno.
 *
 * Requests may be pipelined: each gets its own cookie, and replies are matched by cookie, in
 * whatever order the server sends them. When the connection dies, every pending request is
 * rejected with NbdConnectionClosedError, which is how the crash test tells "acknowledged" from
 * "sent, never answered".
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';

// ---- Wire constants (big-endian everywhere) ----------------------------------------------

const NBDMAGIC = Buffer.from('NBDMAGIC', 'ascii');
const IHAVEOPT = Buffer.from('IHAVEOPT', 'ascii');
const REP_MAGIC = 0x0003e889045565a9n;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;

export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;

export const OPT_ABORT = 2;
export const OPT_LIST = 3;
export const OPT_GO = 7;

export const REP_ACK = 1;
export const REP_SERVER = 2;
export const REP_INFO = 3;
export const REP_ERR_UNSUP = 2 ** 31 + 1;
export const REP_ERR_UNKNOWN = 2 ** 31 + 6;

export const INFO_EXPORT = 0;
export const INFO_BLOCK_SIZE = 3;

export const TFLAG_HAS_FLAGS = 1 << 0;
export const TFLAG_READ_ONLY = 1 << 1;
export const TFLAG_SEND_FLUSH = 1 << 2;
export const TFLAG_SEND_FUA = 1 << 3;
export const TFLAG_SEND_TRIM = 1 << 5;
export const TFLAG_CAN_MULTI_CONN = 1 << 8;

export const CMD_READ = 0;
export const CMD_WRITE = 1;
export const CMD_DISC = 2;
export const CMD_FLUSH = 3;
export const CMD_TRIM = 4;
export const CMD_WRITE_ZEROES = 6;
export const CMD_FLAG_FUA = 1 << 0;

export const EPERM = 1;
export const EIO = 5;
export const EINVAL = 22;
export const ENOSPC = 28;

// ---- Errors ------------------------------------------------------------------------------

/** The connection ended (or was never usable) before the answer came. */
export class NbdConnectionClosedError extends Error {
  constructor(message = 'NBD connection closed') {
    super(message);
    this.name = 'NbdConnectionClosedError';
  }
}

/** The server answered an option with an error reply (type has bit 31 set). */
export class NbdOptionError extends Error {
  readonly replyType: number;
  constructor(option: number, replyType: number, detail: string) {
    super(`NBD option ${option} refused with reply type 0x${replyType.toString(16)}${detail ? `: ${detail}` : ''}`);
    this.name = 'NbdOptionError';
    this.replyType = replyType;
  }
}

/** The server answered a transmission request with a non-zero errno. */
export class NbdRequestError extends Error {
  readonly errno: number;
  constructor(what: string, errno: number) {
    super(`NBD ${what} failed with errno ${errno}`);
    this.name = 'NbdRequestError';
    this.errno = errno;
  }
}

/** The server sent bytes this client cannot parse: a protocol error on the server's side. */
export class NbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NbdProtocolError';
  }
}

// ---- A byte stream reader over a socket ---------------------------------------------------

/**
 * Collects a socket's bytes and hands them out in exact-size pieces. One reader at a time
 * (the handshake, then the reply loop) so there is never a race between two consumers.
 */
export class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: { want: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private closedError: Error | null = null;

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.wake();
    });
    const onEnd = (err?: Error): void => {
      if (this.closedError) return;
      this.closedError = new NbdConnectionClosedError(err ? `NBD connection closed: ${err.message}` : undefined);
      this.wake();
    };
    socket.on('end', () => onEnd());
    socket.on('close', () => onEnd());
    socket.on('error', (err) => onEnd(err));
  }

  /** True once the peer has closed or the socket failed. */
  get closed(): boolean {
    return this.closedError !== null;
  }

  read(n: number): Promise<Buffer> {
    if (this.waiter) throw new Error('ByteReader: concurrent reads');
    return new Promise((resolve, reject) => {
      this.waiter = { want: n, resolve, reject };
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.buffered >= w.want) {
      this.waiter = null;
      w.resolve(this.take(w.want));
    } else if (this.closedError) {
      this.waiter = null;
      w.reject(this.closedError);
    }
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}

/** Connects to a unix socket; rejects if the connection cannot be made. */
export function connectUnix(socketPath: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    const onError = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      // Errors after this point surface through ByteReader; an unhandled 'error' must not crash.
      socket.on('error', () => {});
      resolve(socket);
    });
  });
}

// ---- Handshake pieces --------------------------------------------------------------------

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

/** Reads the 18-byte greeting and returns the handshake flags; throws on a bad magic. */
export async function readGreeting(reader: ByteReader): Promise<number> {
  const g = await reader.read(18);
  if (!g.subarray(0, 8).equals(NBDMAGIC) || !g.subarray(8, 16).equals(IHAVEOPT)) {
    throw new NbdProtocolError(`bad greeting ${g.toString('hex')}`);
  }
  return g.readUInt16BE(16);
}

export function optionBytes(option: number, data: Buffer): Buffer {
  const h = Buffer.alloc(16);
  IHAVEOPT.copy(h, 0);
  h.writeUInt32BE(option, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

export async function readOptionReply(reader: ByteReader): Promise<OptionReply> {
  const h = await reader.read(20);
  const magic = h.readBigUInt64BE(0);
  if (magic !== REP_MAGIC) throw new NbdProtocolError(`bad option reply magic 0x${magic.toString(16)}`);
  const option = h.readUInt32BE(8);
  const type = h.readUInt32BE(12);
  const length = h.readUInt32BE(16);
  const data = length > 0 ? await reader.read(length) : Buffer.alloc(0);
  return { option, type, data };
}

/** NBD_OPT_GO data: name length, name, number of info requests, the requests. */
export function goData(name: string, infos: readonly number[] = []): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infos.length);
  b.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + nameBytes.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + nameBytes.length + 2 * i));
  return b;
}

export interface ExportInfo {
  sizeBytes: number;
  transmissionFlags: number;
  /** From NBD_INFO_BLOCK_SIZE, when the server sent it. */
  blockSize?: { min: number; preferred: number; max: number };
}

// ---- The client ---------------------------------------------------------------------------

interface Pending {
  what: string;
  readLength: number;
  resolve: (data: Buffer) => void;
  reject: (err: Error) => void;
}

export interface RequestOptions {
  flags?: number;
}

export class NbdClient {
  readonly socket: Socket;
  readonly info: ExportInfo;
  private readonly reader: ByteReader;
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private failure: Error | null = null;

  private constructor(socket: Socket, reader: ByteReader, info: ExportInfo) {
    this.socket = socket;
    this.reader = reader;
    this.info = info;
    void this.replyLoop();
  }

  /** Connects, negotiates fixed newstyle, and enters transmission on `exportName` with GO. */
  static async connect(socketPath: string, exportName: string): Promise<NbdClient> {
    const socket = await connectUnix(socketPath);
    const reader = new ByteReader(socket);
    try {
      const info = await NbdClient.negotiate(socket, reader, exportName);
      return new NbdClient(socket, reader, info);
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  private static async negotiate(socket: Socket, reader: ByteReader, exportName: string): Promise<ExportInfo> {
    const serverFlags = await readGreeting(reader);
    if ((serverFlags & FLAG_FIXED_NEWSTYLE) === 0) throw new NbdProtocolError('server is not fixed newstyle');
    const clientFlags = FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES);
    const flagsBuf = Buffer.alloc(4);
    flagsBuf.writeUInt32BE(clientFlags, 0);
    socket.write(flagsBuf);
    socket.write(optionBytes(OPT_GO, goData(exportName, [INFO_BLOCK_SIZE])));
    let sizeBytes = -1;
    let transmissionFlags = 0;
    let blockSize: ExportInfo['blockSize'];
    for (let i = 0; i < 64; i++) {
      const r = await readOptionReply(reader);
      if (r.option !== OPT_GO) throw new NbdProtocolError(`reply for option ${r.option}, expected ${OPT_GO}`);
      if (r.type >= 2 ** 31) throw new NbdOptionError(OPT_GO, r.type, r.data.toString('utf8'));
      if (r.type === REP_INFO && r.data.length >= 2) {
        const infoType = r.data.readUInt16BE(0);
        if (infoType === INFO_EXPORT && r.data.length >= 12) {
          sizeBytes = Number(r.data.readBigUInt64BE(2));
          transmissionFlags = r.data.readUInt16BE(10);
        } else if (infoType === INFO_BLOCK_SIZE && r.data.length >= 14) {
          blockSize = { min: r.data.readUInt32BE(2), preferred: r.data.readUInt32BE(6), max: r.data.readUInt32BE(10) };
        }
        continue;
      }
      if (r.type === REP_ACK) {
        if (sizeBytes < 0) throw new NbdProtocolError('NBD_OPT_GO acknowledged without NBD_INFO_EXPORT');
        return blockSize ? { sizeBytes, transmissionFlags, blockSize } : { sizeBytes, transmissionFlags };
      }
      throw new NbdProtocolError(`unexpected reply type ${r.type} to NBD_OPT_GO`);
    }
    throw new NbdProtocolError('too many replies to NBD_OPT_GO');
  }

  /** True once the connection has failed or closed. */
  get closed(): boolean {
    return this.failure !== null;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const h = await this.reader.read(16);
        const magic = h.readUInt32BE(0);
        if (magic !== SIMPLE_REPLY_MAGIC) throw new NbdProtocolError(`bad reply magic 0x${magic.toString(16)}`);
        const errno = h.readUInt32BE(4);
        const cookie = h.readBigUInt64BE(8);
        const p = this.pending.get(cookie);
        if (!p) throw new NbdProtocolError(`reply for unknown cookie ${cookie}`);
        // READ data follows only a successful reply (simple replies).
        const data = errno === 0 && p.readLength > 0 ? await this.reader.read(p.readLength) : Buffer.alloc(0);
        this.pending.delete(cookie);
        if (errno === 0) p.resolve(data);
        else p.reject(new NbdRequestError(p.what, errno));
      }
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private fail(err: Error): void {
    if (!this.failure) this.failure = err;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
    this.socket.destroy();
  }

  /** Sends one request; resolves with READ data (empty for other commands) when answered. */
  request(type: number, offset: number, length: number, payload?: Buffer, opts: RequestOptions = {}): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    const cookie = this.nextCookie++;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(opts.flags ?? 0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    const what = `${commandName(type)} offset=${offset} length=${length}`;
    const promise = new Promise<Buffer>((resolve, reject) => {
      this.pending.set(cookie, { what, readLength: type === CMD_READ ? length : 0, resolve, reject });
    });
    this.socket.write(h);
    if (payload && payload.length > 0) this.socket.write(payload);
    return promise;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.request(CMD_READ, offset, length);
  }

  async write(offset: number, data: Buffer, fua = false): Promise<void> {
    await this.request(CMD_WRITE, offset, data.length, data, fua ? { flags: CMD_FLAG_FUA } : {});
  }

  async flush(): Promise<void> {
    await this.request(CMD_FLUSH, 0, 0);
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.request(CMD_TRIM, offset, length);
  }

  /** Reads [offset, offset+length) in pieces of at most `chunkBytes`, a few in flight. */
  async readAll(offset: number, length: number, chunkBytes = 4 * 1024 * 1024): Promise<Buffer> {
    const out = Buffer.alloc(length);
    const jobs: Promise<void>[] = [];
    for (let at = 0; at < length; at += chunkBytes) {
      const n = Math.min(chunkBytes, length - at);
      const pos = at;
      jobs.push(this.read(offset + pos, n).then((d) => void d.copy(out, pos)));
    }
    await Promise.all(jobs);
    return out;
  }

  /** NBD_CMD_DISC, then waits for the server to close the connection. */
  async disconnect(): Promise<void> {
    if (this.failure) return;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(CMD_DISC, 6);
    h.writeBigUInt64BE(this.nextCookie++, 8);
    await new Promise<void>((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end(h);
      setTimeout(() => {
        this.socket.destroy();
        resolve();
      }, 5000).unref();
    });
  }

  destroy(): void {
    this.fail(new NbdConnectionClosedError('destroyed by the client'));
  }
}

function commandName(type: number): string {
  return ['READ', 'WRITE', 'DISC', 'FLUSH', 'TRIM', 'CACHE', 'WRITE_ZEROES'][type] ?? `CMD${type}`;
}

/** NBD_OPT_LIST: the export names the server announces. */
export async function listExports(socketPath: string): Promise<string[]> {
  const socket = await connectUnix(socketPath);
  const reader = new ByteReader(socket);
  try {
    const serverFlags = await readGreeting(reader);
    const flagsBuf = Buffer.alloc(4);
    flagsBuf.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES), 0);
    socket.write(flagsBuf);
    socket.write(optionBytes(OPT_LIST, Buffer.alloc(0)));
    const names: string[] = [];
    for (;;) {
      const r = await readOptionReply(reader);
      if (r.type === REP_ACK) break;
      if (r.type !== REP_SERVER) throw new NbdOptionError(OPT_LIST, r.type, r.data.toString('utf8'));
      const n = r.data.readUInt32BE(0);
      names.push(r.data.subarray(4, 4 + n).toString('utf8'));
    }
    socket.write(optionBytes(OPT_ABORT, Buffer.alloc(0)));
    return names;
  } finally {
    socket.destroy();
  }
}

/** Resolves when the socket is closed by the peer, or with false after `timeoutMs`. */
export function waitForClose(socket: Socket, timeoutMs: number): Promise<boolean> {
  if (socket.destroyed || socket.readableEnded) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    const done = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    socket.once('close', done);
    socket.once('end', done);
    socket.resume();
  });
}

// ---- Raw sockets for fuzzing: any bytes out, every byte in ------------------------------------

export const OPT_EXPORT_NAME = 1;
export const OPT_STARTTLS = 5;
export const OPT_INFO = 6;
export const OPT_STRUCTURED_REPLY = 8;
export const OPT_LIST_META_CONTEXT = 9;
export const OPT_SET_META_CONTEXT = 10;
export const REP_META_CONTEXT = 4;

export const CMD_CACHE = 5;
export const CMD_BLOCK_STATUS = 7;
export const CMD_FLAG_NO_HOLE = 1 << 1;
export const CMD_FLAG_DF = 1 << 2;
export const CMD_FLAG_REQ_ONE = 1 << 3;
export const CMD_FLAG_FAST_ZERO = 1 << 4;

export const REQUEST_MAGIC_VALUE = REQUEST_MAGIC;
export const SIMPLE_REPLY_MAGIC_VALUE = SIMPLE_REPLY_MAGIC;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const OPTION_REPLY_MAGIC = REP_MAGIC;
export const REPLY_FLAG_DONE = 1 << 0;
export const REPLY_TYPE_NONE = 0;
export const REPLY_TYPE_OFFSET_DATA = 1;
export const REPLY_TYPE_OFFSET_HOLE = 2;
export const REPLY_TYPE_BLOCK_STATUS = 5;
export const REPLY_TYPE_ERROR = 2 ** 15 + 1;
export const REPLY_TYPE_ERROR_OFFSET = 2 ** 15 + 2;

/** An option header whose length field may lie about the data that follows. */
export function optionBytesDeclaring(option: number, declaredLength: number, data: Buffer, magic: Buffer = IHAVEOPT): Buffer {
  const h = Buffer.alloc(16);
  magic.copy(h, 0, 0, 8);
  h.writeUInt32BE(option >>> 0, 8);
  h.writeUInt32BE(declaredLength >>> 0, 12);
  return Buffer.concat([h, data]);
}

/** LIST/SET_META_CONTEXT data: export name, number of queries, each query with its length. */
export function metaContextData(exportName: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const name = Buffer.from(exportName, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(name.length, 0);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(head, name, count);
  for (const q of queries) {
    const bytes = Buffer.from(q, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length, 0);
    parts.push(len, bytes);
  }
  return Buffer.concat(parts);
}

export interface RawRequest {
  /** The 32-bit magic; REQUEST_MAGIC_VALUE unless a test wants a bad one. */
  magic?: number;
  flags: number;
  type: number;
  handle: bigint;
  /** Any unsigned 64-bit value, including ones past 2^53. */
  offset: bigint;
  length: number;
}

/** The 28-byte request header, fields taken as given (no checks: fuzzing wants bad ones). */
export function requestHeader(r: RawRequest): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE((r.magic ?? REQUEST_MAGIC) >>> 0, 0);
  h.writeUInt16BE(r.flags & 0xffff, 4);
  h.writeUInt16BE(r.type & 0xffff, 6);
  h.writeBigUInt64BE(BigInt.asUintN(64, r.handle), 8);
  h.writeBigUInt64BE(BigInt.asUintN(64, r.offset), 16);
  h.writeUInt32BE(r.length >>> 0, 24);
  return h;
}

/**
 * A unix-socket connection that sends whatever it is given and keeps every byte it receives:
 * exact reads while a test negotiates, then the whole rest for checking. It never throws on a
 * socket error; `closed` says whether the connection is gone and `closedByPeer` whether the
 * other side ended it.
 */
export class RawConnection {
  readonly socket: Socket;
  /** Resolves when the socket has closed, whoever closed it. */
  readonly closedPromise: Promise<void>;
  closed = false;
  closedByPeer = false;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private lastDataAt = Date.now();
  private wake: (() => void) | null = null;
  private destroyedByUs = false;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.lastDataAt = Date.now();
      this.wake?.();
    });
    socket.on('end', () => {
      if (!this.destroyedByUs) this.closedByPeer = true;
      this.wake?.();
    });
    this.closedPromise = new Promise((resolve) =>
      socket.once('close', () => {
        if (!this.destroyedByUs) this.closedByPeer = true;
        this.closed = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  static async open(socketPath: string): Promise<RawConnection> {
    return new RawConnection(await connectUnix(socketPath));
  }

  get bytesReceived(): number {
    return this.buffered;
  }

  /** Sends bytes; resolves once they have left (or the socket failed, which is not an error here). */
  send(data: Buffer): Promise<void> {
    if (this.socket.destroyed || !this.socket.writable) return Promise.resolve();
    return new Promise((resolve) => this.socket.write(data, () => resolve()));
  }

  /** Exactly `n` of the received bytes, in order; null if the connection ends first. */
  async read(n: number): Promise<Buffer | null> {
    while (this.buffered < n) {
      if (this.closed || this.closedByPeer) return null;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
      this.wake = null;
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.buffered);
    this.chunks = n < all.length ? [all.subarray(n)] : [];
    this.buffered -= n;
    return all.subarray(0, n);
  }

  /** Everything received and not yet read. */
  takeAll(): Buffer {
    const all = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    return all;
  }

  /**
   * Waits until the peer closes, or nothing has arrived for `quietMs`, or `maxMs` has passed.
   * Returns true if the connection closed.
   */
  async settle(quietMs: number, maxMs: number): Promise<boolean> {
    const deadline = Date.now() + maxMs;
    while (!this.closed && !this.closedByPeer) {
      const now = Date.now();
      if (now >= deadline || now - this.lastDataAt >= quietMs) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(quietMs, deadline - now));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    return this.closed || this.closedByPeer;
  }

  /** Waits for the peer to close, at most `timeoutMs`; true if it did. */
  async waitClosedByPeer(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && !this.closedByPeer) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    return this.closedByPeer;
  }

  /** Half-close: no more bytes from us; replies still arrive. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    if (!this.closed) this.destroyedByUs = true;
    this.socket.destroy();
  }
}
