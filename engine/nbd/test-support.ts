/**
 * Test support for the NBD server's raw-socket tests: a tiny client that reads exact byte
 * counts, builders for options and requests, reply parsers, and a server on a temporary unix
 * socket over the in-memory device. Test-only; nothing in the engine imports it.
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Logger } from '../logger.ts';
import { MemoryExportProvider } from '../../test/fixtures/memory-device.ts';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_REP_META_CONTEXT,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './protocol.ts';
import { NbdServer } from './server.ts';
import { ExactReader } from './test-exact-reader.ts';
import type { NbdServerOptions } from './server.ts';

/** A raw client: exact reads, and a promise for the moment the server closes on us. */
export class RawClient {
  readonly socket: net.Socket;
  /** Resolves when the socket has closed, whoever closed it. */
  readonly closed: Promise<void>;
  readonly #reader = new ExactReader();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = this.#reader.attach(socket);
  }

  static connect(socketPath: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(socketPath);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawClient(socket));
      });
    });
  }

  /** Exactly `n` bytes; throws if the connection ends first. */
  read(n: number): Promise<Buffer> {
    return this.#reader.read(n);
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  /** Writes and waits until the bytes have left our side. */
  writeAndFlush(data: Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (err) => (err ? reject(err) : resolve())));
  }

  /** True once the server has closed the connection and everything it sent was read. */
  async endsWithoutMoreData(): Promise<boolean> {
    await this.closed;
    return this.#reader.pending === 0;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

// ---- Handshake ----------------------------------------------------------------------------

/** Reads the 18-byte greeting and answers with client flags. Returns the handshake flags. */
export async function greet(
  client: RawClient,
  clientFlags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES,
): Promise<number> {
  const greeting = await client.read(18);
  const flags = greeting.readUInt16BE(16);
  const reply = Buffer.alloc(4);
  reply.writeUInt32BE(clientFlags >>> 0, 0);
  client.write(reply);
  return flags;
}

export function option(code: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const buf = Buffer.alloc(16 + data.length);
  buf.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
  buf.writeUInt32BE(code, 8);
  buf.writeUInt32BE(data.length, 12);
  data.copy(buf, 16);
  return buf;
}

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export async function readOptionReply(client: RawClient): Promise<OptionReply> {
  const header = await client.read(20);
  if (header.readBigUInt64BE(0) !== NBD_REP_MAGIC) throw new Error('bad option reply magic');
  const length = header.readUInt32BE(16);
  return { option: header.readUInt32BE(8), type: header.readUInt32BE(12), data: await client.read(length) };
}

/** Replies up to and including the first one that is not NBD_REP_INFO/SERVER/META_CONTEXT. */
export async function readOptionReplies(client: RawClient): Promise<OptionReply[]> {
  const replies: OptionReply[] = [];
  for (;;) {
    const reply = await readOptionReply(client);
    replies.push(reply);
    if (reply.type === NBD_REP_ACK || reply.type >= 0x8000_0000) return replies;
  }
}

/** INFO/GO data: name, then the requested info types. */
export function infoRequest(name: string, infoTypes: number[] = []): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const buf = Buffer.alloc(4 + nameBytes.length + 2 + 2 * infoTypes.length);
  buf.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(buf, 4);
  buf.writeUInt16BE(infoTypes.length, 4 + nameBytes.length);
  infoTypes.forEach((t, i) => buf.writeUInt16BE(t, 6 + nameBytes.length + 2 * i));
  return buf;
}

/** LIST/SET_META_CONTEXT data: export name, then queries. */
export function metaContextRequest(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const nameBytes = Buffer.from(name, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(nameBytes.length, 0);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(head, nameBytes, count);
  for (const query of queries) {
    const bytes = Buffer.from(query, 'utf8');
    const length = Buffer.alloc(4);
    length.writeUInt32BE(bytes.length, 0);
    parts.push(length, bytes);
  }
  return Buffer.concat(parts);
}

export interface OpenOptions {
  structured?: boolean;
  allocation?: boolean;
}

export interface OpenedExport {
  client: RawClient;
  sizeBytes: number;
  transmissionFlags: number;
  /** Context id the server gave base:allocation, or null when not selected. */
  allocationContextId: number | null;
}

/** Connects, negotiates (optionally structured replies and base:allocation) and GOes. */
export async function openExport(socketPath: string, name: string, opts: OpenOptions = {}): Promise<OpenedExport> {
  const client = await RawClient.connect(socketPath);
  await greet(client);
  let allocationContextId: number | null = null;
  if (opts.structured === true || opts.allocation === true) {
    client.write(option(NBD_OPT_STRUCTURED_REPLY));
    expectAck(await readOptionReply(client));
  }
  if (opts.allocation === true) {
    client.write(option(NBD_OPT_SET_META_CONTEXT, metaContextRequest(name, ['base:allocation'])));
    for (const reply of await readOptionReplies(client)) {
      if (reply.type === NBD_REP_META_CONTEXT) allocationContextId = reply.data.readUInt32BE(0);
      else expectAck(reply);
    }
  }
  client.write(option(NBD_OPT_GO, infoRequest(name)));
  let sizeBytes = -1;
  let transmissionFlags = -1;
  for (const reply of await readOptionReplies(client)) {
    if (reply.type === NBD_REP_INFO && reply.data.readUInt16BE(0) === 0) {
      sizeBytes = Number(reply.data.readBigUInt64BE(2));
      transmissionFlags = reply.data.readUInt16BE(10);
    } else if (reply.type !== NBD_REP_INFO) {
      expectAck(reply);
    }
  }
  return { client, sizeBytes, transmissionFlags, allocationContextId };
}

function expectAck(reply: OptionReply): void {
  if (reply.type !== NBD_REP_ACK) throw new Error(`option ${reply.option} answered ${reply.type.toString(16)}`);
}

// ---- Transmission -------------------------------------------------------------------------

export interface RequestFields {
  type: number;
  flags?: number;
  handle: bigint;
  offset?: bigint | number;
  length?: number;
  payload?: Buffer;
}

/** A request header, followed by the payload when one is given. */
export function request(fields: RequestFields): Buffer {
  const payload = fields.payload ?? Buffer.alloc(0);
  const buf = Buffer.alloc(28 + payload.length);
  buf.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  buf.writeUInt16BE(fields.flags ?? 0, 4);
  buf.writeUInt16BE(fields.type, 6);
  buf.writeBigUInt64BE(fields.handle, 8);
  buf.writeBigUInt64BE(BigInt(fields.offset ?? 0), 16);
  buf.writeUInt32BE(fields.length ?? payload.length, 24);
  payload.copy(buf, 28);
  return buf;
}

export interface SimpleReply {
  errno: number;
  handle: bigint;
}

export async function readSimpleReply(client: RawClient): Promise<SimpleReply> {
  const header = await client.read(16);
  if (header.readUInt32BE(0) !== NBD_SIMPLE_REPLY_MAGIC) throw new Error('not a simple reply');
  return { errno: header.readUInt32BE(4), handle: header.readBigUInt64BE(8) };
}

export interface StructuredChunk {
  flags: number;
  type: number;
  handle: bigint;
  payload: Buffer;
}

export async function readStructuredChunk(client: RawClient): Promise<StructuredChunk> {
  const header = await client.read(20);
  if (header.readUInt32BE(0) !== NBD_STRUCTURED_REPLY_MAGIC) throw new Error('not a structured reply');
  return {
    flags: header.readUInt16BE(4),
    type: header.readUInt16BE(6),
    handle: header.readBigUInt64BE(8),
    payload: await client.read(header.readUInt32BE(16)),
  };
}

// ---- Server -------------------------------------------------------------------------------

export interface LogRecord {
  level: 'debug' | 'info' | 'warn' | 'error';
  obj: unknown;
  msg: string | undefined;
}

/** A Logger that keeps every record, so tests can see what was (or was not) logged. */
export function recordingLogger(records: LogRecord[] = []): Logger & { records: LogRecord[] } {
  const make = (level: LogRecord['level']) => (obj: unknown, msg?: string) => {
    records.push(typeof obj === 'string' ? { level, obj: {}, msg: obj } : { level, obj, msg });
  };
  const logger = {
    records,
    debug: make('debug'),
    info: make('info'),
    warn: make('warn'),
    error: make('error'),
    child: () => logger,
  };
  return logger;
}

export interface TestServer {
  server: NbdServer;
  exports: MemoryExportProvider;
  socketPath: string;
  logger: ReturnType<typeof recordingLogger>;
  /** Closes the server and removes the temporary directory. */
  stop(): Promise<void>;
}

/** An NbdServer over a MemoryExportProvider on a socket in a fresh temporary directory. */
export async function startTestServer(
  setup: (exports: MemoryExportProvider) => void,
  options: Partial<Omit<NbdServerOptions, 'exports' | 'logger'>> = {},
): Promise<TestServer> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'braid-nbd-'));
  const socketPath = path.join(dir, 'nbd.sock');
  const exports = new MemoryExportProvider();
  setup(exports);
  const logger = recordingLogger();
  const server = new NbdServer({ exports, logger, ...options });
  await server.listen(socketPath);
  return {
    server,
    exports,
    socketPath,
    logger,
    async stop() {
      await server.close();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
