/**
 * Server side of NBD_OPT_STARTTLS: runs the TLS handshake on an accepted TCP socket and hands
 * back the TLS socket only if the client proved a certificate signed by our CA.
 *
 * Why a tls.Server that never listens, rather than `new tls.TLSSocket(socket, { isServer: true,
 * requestCert: true, rejectUnauthorized: true })`: on such a standalone server socket Node asks
 * for a client certificate (and fails a client that sends none) but never checks that the
 * certificate chains to the CA — Node's OpenSSL verify callback accepts everything and the
 * chain check runs only for sockets a tls.Server accepted. A certificate from any other CA
 * would get in (tried on Node 24: `secure` fires, `authorized` stays false, nothing closes).
 * So each socket is given to a tls.Server through its documented 'connection' event; Node then
 * verifies the chain with OpenSSL and destroys the socket unless it verifies.
 *
 * The tls.Server reports the TLS socket, not the TCP socket it wraps, so an upgrade is matched
 * to its connection by the connection's address pair (unique among live TCP connections).
 *
 * Session tickets are off: every connection makes a full handshake with its certificate, and
 * nothing lets a later connection skip the check.
 */
import { constants } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import type { TlsCredentials } from './tls-credentials.ts';

/** The TLS handshake did not give an authenticated connection; the socket is closed. */
export class TlsHandshakeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsHandshakeError';
  }
}

interface PendingUpgrade {
  resolve(socket: tls.TLSSocket): void;
  reject(err: TlsHandshakeError): void;
  /** What the tls.Server said went wrong, when it could be matched to this connection. */
  reason: string | null;
}

const UNTRUSTED_OR_GONE =
  'the TLS handshake did not complete: a client certificate not signed by the trusted CA, the client leaving, or the handshake timeout';

export class TlsAcceptor {
  private readonly server: tls.Server;
  private readonly pending = new Map<string, PendingUpgrade>();

  constructor(credentials: TlsCredentials) {
    this.server = tls.createServer({
      cert: credentials.cert,
      key: credentials.key,
      ca: credentials.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      secureOptions: constants.SSL_OP_NO_TICKET,
    });
    this.server.on('secureConnection', this.onSecureConnection);
    this.server.on('tlsClientError', this.onClientError);
  }

  /** Upgrades still waiting for their handshake (for tests). */
  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Runs the TLS handshake on `socket`, which must be idle (no 'data' listener, nothing unread
   * that was meant for us) and already have an 'error' listener. Resolves with the TLS socket
   * once the client is authenticated; rejects with TlsHandshakeError otherwise, the socket
   * closed. Destroying `socket` meanwhile (a timeout, a shutdown) ends the handshake too.
   */
  upgrade(socket: net.Socket): Promise<tls.TLSSocket> {
    const key = connectionKey(socket);
    if (key === null || socket.destroyed) {
      socket.destroy();
      return Promise.reject(new TlsHandshakeError('the connection closed before the TLS handshake'));
    }
    if (this.pending.has(key)) {
      // Cannot happen for live TCP connections; refusing keeps the matching unambiguous.
      socket.destroy();
      return Promise.reject(new TlsHandshakeError('another TLS handshake is running on this address pair'));
    }
    return new Promise((resolve, reject) => {
      const onClose = (): void => {
        // Deferred one turn so that a reason the tls.Server reports in the same turn is kept.
        setImmediate(() => {
          const entry = this.pending.get(key);
          if (entry === undefined) return;
          this.pending.delete(key);
          entry.reject(new TlsHandshakeError(entry.reason ?? UNTRUSTED_OR_GONE));
        });
      };
      this.pending.set(key, {
        resolve: (secure) => {
          socket.off('close', onClose);
          resolve(secure);
        },
        reject,
        reason: null,
      });
      socket.once('close', onClose);
      this.server.emit('connection', socket);
    });
  }

  private readonly onSecureConnection = (secure: tls.TLSSocket): void => {
    const key = connectionKey(secure);
    const entry = key === null ? undefined : this.pending.get(key);
    if (key === null || entry === undefined) {
      // Not ours (cannot happen): never let an unmatched socket live.
      secure.destroy();
      return;
    }
    this.pending.delete(key);
    entry.resolve(secure);
  };

  private readonly onClientError = (err: Error, secure: tls.TLSSocket): void => {
    // A socket Node destroyed after a failed certificate check has no address any more; that
    // case is reported by the TCP socket's close (UNTRUSTED_OR_GONE).
    const key = connectionKey(secure);
    const entry = key === null ? undefined : this.pending.get(key);
    if (entry !== undefined) entry.reason = describeTlsError(err, secure);
    secure.destroy();
  };
}

/** Both ends of a TCP connection, or null once the socket has lost its handle. */
function connectionKey(socket: net.Socket): string | null {
  const { remoteAddress, remotePort, localAddress, localPort } = socket;
  if (remoteAddress === undefined || remotePort === undefined || localAddress === undefined || localPort === undefined) {
    return null;
  }
  return `${remoteAddress}|${remotePort}|${localAddress}|${localPort}`;
}

function describeTlsError(err: Error, secure: tls.TLSSocket): string {
  const code = (err as NodeJS.ErrnoException).code;
  // A client holding only certificates of other CAs often sends none: we name our CA in the request.
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'the client sent no certificate (it may have none signed by the trusted CA)';
  if (secure.authorizationError !== undefined && secure.authorizationError !== null) {
    return `the client certificate was refused: ${String(secure.authorizationError)}`;
  }
  if (code === 'ECONNRESET') return 'the client left during the TLS handshake';
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'the TLS handshake timed out';
  return `TLS handshake failed: ${code ?? err.message}`;
}
