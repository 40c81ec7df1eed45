/**
 * The NBD server: accepts connections on a unix socket, runs the handshake, then hands each
 * connection to its own TransmissionConnection. Connections share nothing but the
 * ExportProvider, so one client's errors or protocol violations never touch another's.
 *
 * Every connection is counted from accept until its socket has closed and its BlockDevice
 * handle is released; `close()` waits for exactly that, for all of them.
 *
 * Limits (defaults in protocol.ts, documented in docs/ARCHITECTURE.md): open connections
 * (more are closed right after accept, logged once per burst), time to finish the handshake,
 * READ/WRITE size, requests in flight per connection, and WRITE payload bytes in flight over
 * all connections (one WriteBudget that every connection draws on).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import type { ExportProvider } from '../block-device.ts';
import type { Logger } from '../logger.ts';
import { TransmissionConnection } from './connection.ts';
import { negotiate } from './handshake.ts';
import type { StartTls } from './handshake.ts';
import {
  BLOCK_SIZE_PREFERRED_BYTES,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_INFLIGHT_WRITE_BYTES,
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_PAYLOAD_STALL_TIMEOUT_MS,
  HANDSHAKE_BUFFER_MAX_BYTES,
  REFUSAL_SUMMARY_INTERVAL_MS,
} from './protocol.ts';
import { RefusalLog } from './refusal-log.ts';
import { SocketReader } from './socket-reader.ts';
import { WriteBudget } from './write-budget.ts';
import { prepareSocketPath } from '../socket-path.ts';

/** The server's resource limits; every one has a default. */
export interface NbdLimits {
  /** Open connections beyond which new ones are closed at once (default 1024). */
  maxConnections?: number;
  /** Largest READ/WRITE payload, advertised as the maximum block size (default 32 MiB). */
  maxRequestBytes?: number;
  /** Requests served concurrently per connection before reading pauses (default 128). */
  maxInFlightPerConnection?: number;
  /** WRITE payload bytes in flight over all connections (default 256 MiB; >= maxRequestBytes). */
  maxInflightWriteBytes?: number;
  /** Time from accept to the end of the handshake (default 30 s). */
  handshakeTimeoutMs?: number;
  /**
   * While WRITEs wait for budget, a client whose payload made no progress for this long is
   * dropped, its reservation given to the others (default 30 s; it takes one to two periods).
   */
  payloadStallTimeoutMs?: number;
}

export interface NbdServerOptions extends NbdLimits {
  exports: ExportProvider;
  logger: Logger;
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
  private readonly handshakeTimeoutMs: number;
  private readonly payloadStallTimeoutMs: number;
  private readonly writeBudget: WriteBudget;
  private readonly refusals: RefusalLog;
  private server: net.Server | null = null;
  /** Runs while WRITEs wait for budget: drops connections stalled mid-payload. */
  private stallCheck: NodeJS.Timeout | null = null;
  private readonly sessions = new Map<Session, Promise<void>>();
  private closing = false;
  private nextConnectionId = 1;

  constructor(opts: NbdServerOptions) {
    this.exports = opts.exports;
    this.logger = opts.logger;
    this.maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    this.maxRequestBytes = opts.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    this.maxInFlight = opts.maxInFlightPerConnection ?? DEFAULT_MAX_IN_FLIGHT;
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.payloadStallTimeoutMs = opts.payloadStallTimeoutMs ?? DEFAULT_PAYLOAD_STALL_TIMEOUT_MS;
    const maxInflightWriteBytes = opts.maxInflightWriteBytes ?? Math.max(DEFAULT_MAX_INFLIGHT_WRITE_BYTES, this.maxRequestBytes);
    assert.ok(Number.isInteger(this.maxConnections) && this.maxConnections >= 1, 'maxConnections');
    assert.ok(Number.isInteger(this.maxInFlight) && this.maxInFlight >= 1, 'maxInFlightPerConnection');
    // The protocol wants the maximum block size at least as large as the preferred one.
    assert.ok(
      Number.isInteger(this.maxRequestBytes) &&
        this.maxRequestBytes >= BLOCK_SIZE_PREFERRED_BYTES &&
        this.maxRequestBytes <= MAX_REQUEST_BYTES_LIMIT,
      'maxRequestBytes',
    );
    // A WRITE of the largest size must fit the budget, or it would wait forever.
    assert.ok(Number.isSafeInteger(maxInflightWriteBytes) && maxInflightWriteBytes >= this.maxRequestBytes, 'maxInflightWriteBytes');
    assert.ok(Number.isInteger(this.handshakeTimeoutMs) && this.handshakeTimeoutMs >= 1, 'handshakeTimeoutMs');
    assert.ok(Number.isInteger(this.payloadStallTimeoutMs) && this.payloadStallTimeoutMs >= 1, 'payloadStallTimeoutMs');
    this.writeBudget = new WriteBudget(maxInflightWriteBytes, this.onWriteContention);
    this.refusals = new RefusalLog(this.logger, REFUSAL_SUMMARY_INTERVAL_MS);
  }

  /** Connections accepted and not yet fully closed (handshaking ones included). */
  get connectionCount(): number {
    return this.sessions.size;
  }

  /** WRITE payload bytes reserved right now, over all connections. */
  get inflightWriteBytes(): number {
    return this.writeBudget.inUseBytes;
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
    const server = net.createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
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
    this.stopStallCheck();
    this.server = null;
  }

  /**
   * WRITEs have begun to wait for budget. Every payloadStallTimeoutMs until they stop waiting,
   * each connection is asked whether its payload moved since the last time; so a client stalled
   * mid-payload is dropped after one to two periods. Nothing runs while nobody waits.
   */
  private readonly onWriteContention = (): void => {
    if (this.stallCheck !== null) return;
    this.stallCheck = setInterval(() => {
      if (!this.writeBudget.hasWaiters) {
        this.stopStallCheck();
        return;
      }
      for (const session of this.sessions.keys()) session.transmission?.checkStalled();
    }, this.payloadStallTimeoutMs);
    this.stallCheck.unref();
  };

  private stopStallCheck(): void {
    if (this.stallCheck === null) return;
    clearInterval(this.stallCheck);
    this.stallCheck = null;
    // Marks left from this round must not count against a connection in the next one.
    for (const session of this.sessions.keys()) session.transmission?.resetStallCheck();
  }

  /**
   * Serves one accepted connection: the unix listener's, and the TCP listener's
   * (engine/nbd/tcp-listener.ts), under the same limits. With `tls` the client must upgrade
   * (NBD_OPT_STARTTLS) before anything else.
   */
  accept(socket: net.Socket, tls?: StartTls): void {
    // Every socket needs an 'error' listener, or an ECONNRESET would crash the process.
    socket.on('error', (err) => this.logger.debug({ err }, 'NBD socket error'));
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.sessions.size >= this.maxConnections) {
      this.refusals.refused(this.maxConnections);
      socket.destroy();
      return;
    }
    this.refusals.accepted();
    const remote = socket.remoteAddress === undefined ? {} : { remote: `${socket.remoteAddress}:${socket.remotePort}` };
    const logger = this.logger.child({ nbdConnection: this.nextConnectionId++, ...remote });
    const session: Session = { socket, transmission: null };
    this.sessions.set(
      session,
      this.serve(session, logger, tls).finally(() => this.sessions.delete(session)),
    );
  }

  /** Runs one connection to the end. Never rejects. */
  private async serve(session: Session, logger: Logger, tls: StartTls | undefined): Promise<void> {
    const socket = session.socket;
    // Absolute, not idle time: a client trickling a byte at a time must not hold a slot forever.
    const handshakeTimer = setTimeout(() => {
      logger.info({ timeoutMs: this.handshakeTimeoutMs }, 'NBD handshake not finished in time; closing the connection');
      socket.destroy();
    }, this.handshakeTimeoutMs);
    try {
      const reader = new SocketReader(socket, HANDSHAKE_BUFFER_MAX_BYTES);
      let negotiated: Awaited<ReturnType<typeof negotiate>>;
      try {
        negotiated = await negotiate(socket, reader, {
          exports: this.exports,
          maxRequestBytes: this.maxRequestBytes,
          logger,
          ...(tls === undefined ? {} : { tls }),
        });
      } finally {
        clearTimeout(handshakeTimer);
      }
      if (negotiated === null) {
        await socketClosed(socket);
        return;
      }
      logger.debug({ exportName: negotiated.name }, 'NBD transmission started');
      // After STARTTLS the transmission runs on the TLS socket and its reader.
      const stream = negotiated.secured ?? { socket, reader };
      const transmission = new TransmissionConnection(stream.socket, negotiated, stream.reader.detach(), {
        maxRequestBytes: this.maxRequestBytes,
        maxInFlight: this.maxInFlight,
        writeBudget: this.writeBudget,
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
