/**
 * The NBD server: accepts connections on a unix socket, runs the handshake, then hands each
 * connection to its own TransmissionConnection. Connections share nothing but the
 * ExportProvider, so one client's errors or protocol violations never touch another's.
 *
 * Every connection is counted from accept until its socket has closed and its BlockDevice
 * handle is released; `close()` waits for exactly that, for all of them.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import type { ExportProvider } from '../block-device.ts';
import type { Logger } from '../logger.ts';
import { TransmissionConnection } from './connection.ts';
import { negotiate } from './handshake.ts';
import {
  BLOCK_SIZE_PREFERRED_BYTES,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_REQUEST_BYTES,
  HANDSHAKE_BUFFER_MAX_BYTES,
} from './protocol.ts';
import { SocketReader } from './socket-reader.ts';
import { prepareSocketPath } from '../socket-path.ts';

export interface NbdServerOptions {
  exports: ExportProvider;
  logger: Logger;
  /** Open connections beyond which new ones are closed at once (default 1024). */
  maxConnections?: number;
  /** Largest READ/WRITE payload, advertised as the maximum block size (default 32 MiB). */
  maxRequestBytes?: number;
  /** Requests served concurrently per connection before reading pauses (default 128). */
  maxInFlightPerConnection?: number;
}

/** Largest maxRequestBytes we accept: a READ reply must fit one Buffer and one u32 length. */
const MAX_REQUEST_BYTES_LIMIT = 1024 * 1024 * 1024;

interface Session {
  readonly socket: net.Socket;
  transmission: TransmissionConnection | null;
}

export class NbdServer {
  private readonly exports: ExportProvider;
  private readonly logger: Logger;
  private readonly maxConnections: number;
  private readonly maxRequestBytes: number;
  private readonly maxInFlight: number;
  private server: net.Server | null = null;
  private readonly sessions = new Map<Session, Promise<void>>();
  private closing = false;
  private nextConnectionId = 1;

  constructor(opts: NbdServerOptions) {
    this.exports = opts.exports;
    this.logger = opts.logger;
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    this.maxInFlight = opts.maxInFlightPerConnection ?? DEFAULT_MAX_IN_FLIGHT;
    assert.ok(Number.isInteger(this.maxConnections) && this.maxConnections >= 1, 'maxConnections');
    assert.ok(Number.isInteger(this.maxInFlight) && this.maxInFlight >= 1, 'maxInFlightPerConnection');
    // The protocol wants the maximum block size at least as large as the preferred one.
    assert.ok(
      Number.isInteger(this.maxRequestBytes) &&
        this.maxRequestBytes >= BLOCK_SIZE_PREFERRED_BYTES &&
        this.maxRequestBytes <= MAX_REQUEST_BYTES_LIMIT,
      'maxRequestBytes',
    );
  }

  /** Connections accepted and not yet fully closed (handshaking ones included). */
  get connectionCount(): number {
    return this.sessions.size;
  }

  /**
   * Listens on a unix socket. A stale socket file at the path is removed first (proven stale:
   * nothing answers on it); a live listener or any other kind of file there is an error. The mode is applied right after listen(), so until then the
   * socket has the process umask's permissions: keep it in a directory only we can enter.
   */
  async listen(socketPath: string, mode = 0o600): Promise<void> {
    assert.equal(this.server, null, 'listen() called twice');
    assert.ok(!this.closing, 'listen() after close()');
    await prepareSocketPath(socketPath);
    const server = net.createServer({ allowHalfOpen: true }, this.onConnection);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.logger.error({ err }, 'NBD server error'));
    this.server = server;
    try {
      await fs.chmod(socketPath, mode);
    } catch (err) {
      await this.close();
      throw err;
    }
    this.logger.info({ socketPath, mode: mode.toString(8) }, 'NBD server listening');
  }

  /**
   * Stops accepting, ends handshakes, lets every in-flight request finish and be answered,
   * closes every connection and releases every BlockDevice handle.
   */
  async close(): Promise<void> {
    this.closing = true;
    const server = this.server;
    const stopped = new Promise<void>((resolve) => {
      if (server === null) resolve();
      else server.close(() => resolve());
    });
    for (const session of this.sessions.keys()) {
      if (session.transmission !== null) void session.transmission.shutdown();
      else session.socket.destroy();
    }
    await Promise.all([stopped, ...this.sessions.values()]);
    this.server = null;
  }

  private readonly onConnection = (socket: net.Socket): void => {
    // Every socket needs an 'error' listener, or an ECONNRESET would crash the process.
    socket.on('error', (err) => this.logger.debug({ err }, 'NBD socket error'));
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.sessions.size >= this.maxConnections) {
      this.logger.warn({ maxConnections: this.maxConnections }, 'too many NBD connections; refusing one');
      socket.destroy();
      return;
    }
    const logger = this.logger.child({ nbdConnection: this.nextConnectionId++ });
    const session: Session = { socket, transmission: null };
    this.sessions.set(
      session,
      this.serve(session, logger).finally(() => this.sessions.delete(session)),
    );
  };

  /** Runs one connection to the end. Never rejects. */
  private async serve(session: Session, logger: Logger): Promise<void> {
    const socket = session.socket;
    try {
      const reader = new SocketReader(socket, HANDSHAKE_BUFFER_MAX_BYTES);
      const negotiated = await negotiate(socket, reader, {
        exports: this.exports,
        maxRequestBytes: this.maxRequestBytes,
        logger,
      });
      if (negotiated === null) {
        await socketClosed(socket);
        return;
      }
      logger.debug({ exportName: negotiated.name }, 'NBD transmission started');
      const transmission = new TransmissionConnection(socket, negotiated, reader.detach(), {
        maxRequestBytes: this.maxRequestBytes,
        maxInFlight: this.maxInFlight,
        logger,
      });
      session.transmission = transmission;
      if (this.closing) void transmission.shutdown();
      await transmission.finished;
      logger.debug({ exportName: negotiated.name }, 'NBD connection closed');
    } catch (err) {
      logger.error({ err }, 'NBD connection failed');
      socket.destroy();
      await socketClosed(socket);
    }
  }
}

function socketClosed(socket: net.Socket): Promise<void> {
  if (socket.closed) return Promise.resolve();
  return new Promise((resolve) => socket.once('close', () => resolve()));
}
