/**
 * The /dev/fuse end of a mount: reads requests, hands them to a handler, writes replies.
 *
 * Reading: a read(2) of /dev/fuse blocks until the kernel has a request, and returns exactly one.
 * Node has no way to poll a character device, so each read is an fs.read on the libuv thread
 * pool, and several are kept outstanding (one per reader, each with its own buffer, reused for
 * every request it reads) so that the kernel can hand out requests while the main thread works.
 * Each blocked read holds a pool thread: the process sets UV_THREADPOOL_SIZE above the number of
 * readers (braid-fuse.ts), or nothing else could use the pool.
 *
 * A buffer is read into again as soon as the handler returns, so handlers copy out what they
 * keep (fuse-codec.ts decodes into plain values; WRITE data is copied).
 *
 * Replying: one write(2) per reply, synchronously on the main thread. A reply to /dev/fuse never
 * blocks: the kernel copies it into the waiting request and returns. A reply to a request the
 * kernel gave up on (interrupted, or the mount went away) fails with ENOENT, which is normal.
 *
 * End: once the mount is unmounted (or the connection aborted), reads fail with ENODEV; the
 * session ends when every reader has seen that.
 */
import { read, write, writeSync } from 'node:fs';
import { EIO, IN_HEADER_BYTES } from './fuse-abi.ts';
import { decodeInHeader, errorReply, FuseDecodeError } from './fuse-codec.ts';
import type { InHeader } from './fuse-codec.ts';

export interface FuseHandler {
  /**
   * Handles one request, replying now or later through the session. Must copy what it needs
   * out of `buf` before it returns. A throw is answered with EIO.
   */
  handle(header: InHeader, buf: Buffer, bodyAt: number, bodyBytes: number): void;
}

export interface SessionLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface FuseSessionOptions {
  /** An open /dev/fuse, mounted (reads before the mount fail with EPERM). */
  fd: number;
  /** Reads kept outstanding. */
  readers: number;
  /** Bytes of each read buffer: at least the header + fuse_write_in + max_write. */
  bufferBytes: number;
  logger: SessionLogger;
}

export class FuseSession {
  readonly #fd: number;
  readonly #opts: FuseSessionOptions;
  readonly #log: SessionLogger;
  #handler: FuseHandler | undefined;
  #running = 0;
  #endResolve!: () => void;
  /** Resolves when the mount is gone and every reader has stopped. */
  readonly ended: Promise<void>;

  constructor(opts: FuseSessionOptions) {
    this.#fd = opts.fd;
    this.#opts = opts;
    this.#log = opts.logger;
    this.ended = new Promise((resolve) => (this.#endResolve = resolve));
  }

  start(handler: FuseHandler): void {
    if (this.#handler !== undefined) throw new Error('the FUSE session is already started');
    this.#handler = handler;
    for (let i = 0; i < this.#opts.readers; i++) {
      this.#running++;
      this.#readInto(Buffer.allocUnsafe(this.#opts.bufferBytes));
    }
  }

  /** Sends one complete reply (header included). */
  reply(message: Buffer): void {
    try {
      writeSync(this.#fd, message);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOENT: the kernel dropped the request (interrupted). ENODEV: the mount is gone.
      if (code !== 'ENOENT' && code !== 'ENODEV') this.#log.error({ err, bytes: message.length }, 'the kernel refused a FUSE reply');
    }
  }

  replyError(unique: bigint, errno: number): void {
    this.reply(errorReply(unique, errno));
  }

  /**
   * Sends a notification (unique 0). Asynchronously, on the thread pool: an invalidation may wait
   * for kernel locks, and the main thread must stay free to answer the requests it may cause.
   */
  notify(message: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      write(this.#fd, message, 0, message.length, null, (err) => (err ? reject(err) : resolve()));
    });
  }

  #readInto(buf: Buffer): void {
    read(this.#fd, buf, 0, buf.length, null, (err, bytesRead) => {
      if (err) {
        this.#onReadError(buf, err);
        return;
      }
      this.#dispatch(buf, bytesRead);
      this.#readInto(buf);
    });
  }

  #onReadError(buf: Buffer, err: NodeJS.ErrnoException): void {
    switch (err.code) {
      case 'ENOENT': // the request was interrupted before we read it
      case 'EINTR':
      case 'EAGAIN':
        this.#readInto(buf);
        return;
      case 'ENODEV': // unmounted, or the connection was aborted
        break;
      default:
        this.#log.error({ err }, 'reading /dev/fuse failed; this reader stops');
    }
    if (--this.#running === 0) this.#endResolve();
  }

  #dispatch(buf: Buffer, bytesRead: number): void {
    let header: InHeader;
    try {
      header = decodeInHeader(buf, bytesRead);
    } catch (err) {
      // Without a header there is no unique to answer: the kernel would wait for ever, but it
      // never sends such a request, so this is logged as the bug it would be.
      this.#log.error({ err, bytesRead }, 'an unreadable FUSE request');
      return;
    }
    try {
      this.#handler!.handle(header, buf, IN_HEADER_BYTES, bytesRead - IN_HEADER_BYTES);
    } catch (err) {
      if (!(err instanceof FuseDecodeError)) this.#log.error({ err, opcode: header.opcode }, 'a FUSE request handler failed');
      else this.#log.warn({ err, opcode: header.opcode }, 'a malformed FUSE request');
      this.replyError(header.unique, EIO);
    }
  }
}
