/**
 * Exact-length reads from a socket, for the handshake only (the transmission phase parses
 * socket chunks itself, without promises). One read may be outstanding at a time. When the
 * handshake ends, `detach()` hands whatever the client already sent to the next owner, so bytes
 * pipelined right after NBD_OPT_GO are not lost.
 *
 * Invariant: `bufferedBytes` is the sum of the lengths of `chunks`, and never exceeds
 * `maxBufferedBytes` (a client that sends more before we ask is disconnected).
 */
import assert from 'node:assert/strict';
import type { Socket } from 'node:net';

/** Rejection of a pending read: the peer closed (or was closed) before sending enough bytes. */
export class ConnectionClosedError extends Error {
  constructor() {
    super('NBD connection closed during the handshake');
    this.name = 'ConnectionClosedError';
  }
}

interface PendingRead {
  lengthBytes: number;
  resolve: (data: Buffer) => void;
  reject: (err: Error) => void;
}

export class SocketReader {
  private readonly socket: Socket;
  private readonly maxBufferedBytes: number;
  private readonly chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private pending: PendingRead | null = null;
  private closed = false;

  constructor(socket: Socket, maxBufferedBytes: number) {
    this.socket = socket;
    this.maxBufferedBytes = maxBufferedBytes;
    socket.on('data', this.onData);
    socket.on('end', this.onClose);
    socket.on('close', this.onClose);
  }

  /** Resolves with exactly `lengthBytes` bytes; a view into one chunk when possible. */
  read(lengthBytes: number): Promise<Buffer> {
    assert.equal(this.pending, null, 'one handshake read at a time');
    if (this.bufferedBytes >= lengthBytes) return Promise.resolve(this.take(lengthBytes));
    if (this.closed) return Promise.reject(new ConnectionClosedError());
    return new Promise((resolve, reject) => {
      this.pending = { lengthBytes, resolve, reject };
    });
  }

  /** Stops listening and returns the bytes received but not yet read, in order. */
  detach(): Buffer[] {
    assert.equal(this.pending, null, 'detach with a read outstanding');
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onClose);
    this.socket.off('close', this.onClose);
    const rest = this.chunks.splice(0);
    this.bufferedBytes = 0;
    return rest;
  }

  private readonly onData = (chunk: Buffer): void => {
    this.chunks.push(chunk);
    this.bufferedBytes += chunk.length;
    if (this.bufferedBytes > this.maxBufferedBytes) {
      // A handshake needs a few KiB at most; a flood is abuse or garbage.
      this.socket.destroy();
      this.onClose();
      return;
    }
    const pending = this.pending;
    if (pending !== null && this.bufferedBytes >= pending.lengthBytes) {
      this.pending = null;
      pending.resolve(this.take(pending.lengthBytes));
    }
  };

  private readonly onClose = (): void => {
    this.closed = true;
    const pending = this.pending;
    if (pending !== null && this.bufferedBytes < pending.lengthBytes) {
      this.pending = null;
      pending.reject(new ConnectionClosedError());
    }
  };

  private take(lengthBytes: number): Buffer {
    assert.ok(lengthBytes <= this.bufferedBytes);
    this.bufferedBytes -= lengthBytes;
    const first = this.chunks[0];
    if (lengthBytes === 0) return Buffer.alloc(0);
    assert.ok(first !== undefined);
    if (first.length >= lengthBytes) {
      if (first.length === lengthBytes) this.chunks.shift();
      else this.chunks[0] = first.subarray(lengthBytes);
      return first.subarray(0, lengthBytes);
    }
    const out = Buffer.allocUnsafe(lengthBytes);
    let filled = 0;
    while (filled < lengthBytes) {
      const chunk = this.chunks[0];
      assert.ok(chunk !== undefined);
      const n = Math.min(chunk.length, lengthBytes - filled);
      chunk.copy(out, filled, 0, n);
      filled += n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    return out;
  }
}
