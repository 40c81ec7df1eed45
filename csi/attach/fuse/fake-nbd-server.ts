/**
 * For unit tests of the NBD client: a small NBD server on a unix socket over an in-memory disk
 * that caches like the engine does. A WRITE (or WRITE_ZEROES, TRIM) is acknowledged once applied
 * to `current`; only a FLUSH copies `current` to `durable`. `crash()` is kill -9: connections
 * drop, requests not yet answered are never applied, and `current` goes back to `durable`.
 *
 * `hold` keeps requests unanswered (and unapplied) until `release()`, to have them in flight
 * when the server crashes. Written from the protocol document (fixed newstyle, GO / INFO / ABORT,
 * simple replies), independent of the client under test.
 */
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import {
  NBD_CMD_DISC,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
} from '../../../engine/nbd/protocol.ts';

interface Held {
  socket: Socket;
  command: number;
  handle: Buffer;
  offset: number;
  length: number;
  data: Buffer | undefined;
}

export class FakeNbdServer {
  readonly path: string;
  readonly exportName: string;
  current: Buffer;
  durable: Buffer;
  /** Requests of each command received (NBD_CMD_* → count). */
  readonly received = new Map<number, number>();
  /** Every applied mutation, in order: [command, offset, length, first byte written (-1 for zeroes)]. */
  readonly applied: [number, number, number, number][] = [];
  hold = false;
  /** Errno to answer WRITEs with (0: succeed). */
  failWritesWith = 0;
  #held: Held[] = [];
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();

  constructor(path: string, exportName: string, sizeBytes: number) {
    this.path = path;
    this.exportName = exportName;
    this.current = Buffer.alloc(sizeBytes);
    this.durable = Buffer.alloc(sizeBytes);
  }

  count(command: number): number {
    return this.received.get(command) ?? 0;
  }

  async start(): Promise<void> {
    await rm(this.path, { force: true });
    const server = createServer((socket) => this.#accept(socket));
    await new Promise<void>((resolve) => server.listen(this.path, resolve));
    this.#server = server;
  }

  /** kill -9: every connection drops, unanswered requests are lost, unflushed writes too. */
  async crash(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
    this.#held = [];
    this.hold = false;
    this.current = Buffer.from(this.durable);
    await this.stop();
  }

  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(this.path, { force: true });
  }

  /** Grows the export (the next handshake reports the new size). */
  grow(sizeBytes: number): void {
    const grow = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc(sizeBytes - b.length)]);
    this.current = grow(this.current);
    this.durable = grow(this.durable);
  }

  /** Answers every held request, in the order received. */
  release(): void {
    const held = this.#held;
    this.#held = [];
    this.hold = false;
    for (const h of held) this.#serve(h);
  }

  get heldCount(): number {
    return this.#held.length;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await this.stop();
  }

  #accept(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on('close', () => this.#sockets.delete(socket));
    socket.on('error', () => undefined);
    const greeting = Buffer.alloc(18);
    greeting.writeBigUInt64BE(NBD_MAGIC, 0);
    greeting.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
    greeting.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
    socket.write(greeting);
    let input = Buffer.alloc(0);
    let phase: 'flags' | 'options' | 'transmission' = 'flags';
    socket.on('data', (chunk: Buffer) => {
      input = Buffer.concat([input, chunk]);
      for (;;) {
        if (phase === 'flags') {
          if (input.length < 4) return;
          input = input.subarray(4);
          phase = 'options';
        } else if (phase === 'options') {
          if (input.length < 16) return;
          const length = input.readUInt32BE(12);
          if (input.length < 16 + length) return;
          const option = input.readUInt32BE(8);
          const data = input.subarray(16, 16 + length);
          input = input.subarray(16 + length);
          if (this.#option(socket, option, data)) phase = 'transmission';
        } else {
          if (input.length < 28) return;
          const command = input.readUInt16BE(6);
          const length = input.readUInt32BE(24);
          const payload = command === NBD_CMD_WRITE ? length : 0;
          if (input.length < 28 + payload) return;
          const request: Held = {
            socket,
            command,
            handle: Buffer.from(input.subarray(8, 16)),
            offset: Number(input.readBigUInt64BE(16)),
            length,
            data: payload > 0 ? Buffer.from(input.subarray(28, 28 + payload)) : undefined,
          };
          input = input.subarray(28 + payload);
          this.received.set(command, this.count(command) + 1);
          if (command === NBD_CMD_DISC) {
            socket.end();
            return;
          }
          if (this.hold) this.#held.push(request);
          else this.#serve(request);
        }
      }
    });
  }

  /** Answers one option; true when transmission starts. */
  #option(socket: Socket, option: number, data: Buffer): boolean {
    if (option === NBD_OPT_ABORT) {
      this.#optionReply(socket, option, NBD_REP_ACK, Buffer.alloc(0));
      socket.end();
      return false;
    }
    if (option !== NBD_OPT_GO && option !== NBD_OPT_INFO) {
      this.#optionReply(socket, option, NBD_REP_ERR_UNSUP, Buffer.alloc(0));
      return false;
    }
    const name = data.toString('utf8', 4, 4 + data.readUInt32BE(0));
    if (name !== this.exportName) {
      this.#optionReply(socket, option, NBD_REP_ERR_UNKNOWN, Buffer.from(`no export ${name}`));
      return false;
    }
    const info = Buffer.alloc(12);
    info.writeUInt16BE(0, 0); // NBD_INFO_EXPORT
    info.writeBigUInt64BE(BigInt(this.current.length), 2);
    info.writeUInt16BE(NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES, 10);
    this.#optionReply(socket, option, NBD_REP_INFO, info);
    this.#optionReply(socket, option, NBD_REP_ACK, Buffer.alloc(0));
    return option === NBD_OPT_GO;
  }

  #optionReply(socket: Socket, option: number, type: number, data: Buffer): void {
    const header = Buffer.alloc(20);
    header.writeBigUInt64BE(NBD_REP_MAGIC, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(type, 12);
    header.writeUInt32BE(data.length, 16);
    socket.write(Buffer.concat([header, data]));
  }

  #serve(r: Held): void {
    if (r.socket.destroyed) return;
    let errno = 0;
    let data: Buffer | undefined;
    if (r.offset + r.length > this.current.length) {
      errno = 22;
    } else if (r.command === NBD_CMD_READ) {
      data = Buffer.from(this.current.subarray(r.offset, r.offset + r.length));
    } else if (r.command === NBD_CMD_WRITE) {
      if (this.failWritesWith !== 0) errno = this.failWritesWith;
      else r.data!.copy(this.current, r.offset);
    } else if (r.command === NBD_CMD_WRITE_ZEROES || r.command === NBD_CMD_TRIM) {
      this.current.fill(0, r.offset, r.offset + r.length);
    } else if (r.command === NBD_CMD_FLUSH) {
      this.current.copy(this.durable);
    }
    if (errno === 0 && r.command !== NBD_CMD_READ && r.command !== NBD_CMD_FLUSH) this.applied.push([r.command, r.offset, r.length, r.data?.[0] ?? -1]);
    const reply = Buffer.alloc(16);
    reply.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
    reply.writeUInt32BE(errno, 4);
    r.handle.copy(reply, 8);
    r.socket.write(data ? Buffer.concat([reply, data]) : reply);
  }
}
