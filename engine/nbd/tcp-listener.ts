/**
 * NBD over TCP: a TCP listener whose connections the NbdServer serves like those of its unix
 * socket (same connection limit, handshake timeout, write budget, shutdown). With a TlsAcceptor
 * every client must upgrade with NBD_OPT_STARTTLS and prove a client certificate signed by the
 * CA before any other option is answered; without one (`--nbd-tcp-insecure`, for tests) the
 * listener is plain NBD.
 *
 * Closing only stops accepting: the connections belong to the NbdServer, which closes them in
 * its own close(), so the daemon closes this listener first and the NbdServer after it.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../logger.ts';
import type { NbdServer } from './server.ts';
import type { TlsAcceptor } from './tls-acceptor.ts';

export interface NbdTcpListenerOptions {
  /** Address to bind; `[::1]` brackets are accepted. Empty: every address. */
  host: string;
  /** 0: any free port (the bound one is in `address`). */
  port: number;
  nbd: NbdServer;
  /** Required TLS with client certificates; null only for an explicitly insecure listener. */
  tls: TlsAcceptor | null;
  logger: Logger;
}

export class NbdTcpListener {
  /** HOST:PORT actually bound (`[::1]:10809` for IPv6). */
  readonly address: string;
  private readonly server: net.Server;

  private constructor(server: net.Server, address: string) {
    this.server = server;
    this.address = address;
  }

  static async listen(opts: NbdTcpListenerOptions): Promise<NbdTcpListener> {
    const tls = opts.tls;
    // No Nagle: NBD replies are small and a client often waits for each one.
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      if (tls === null) opts.nbd.accept(socket);
      else opts.nbd.accept(socket, tls);
    });
    const host = unbracket(opts.host);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(host === '' ? { port: opts.port } : { host, port: opts.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => opts.logger.error({ err }, 'NBD TCP listener error'));
    const address = formatAddress(server.address() as AddressInfo);
    if (tls === null) opts.logger.warn({ address, tls: false }, 'NBD listening on TCP WITHOUT TLS (--nbd-tcp-insecure)');
    else opts.logger.info({ address, tls: true }, 'NBD listening on TCP, TLS with client certificates required');
    return new NbdTcpListener(server, address);
  }

  /** Stops accepting. Open connections stay with the NbdServer; resolves without waiting for them. */
  close(): Promise<void> {
    if (this.server.listening) this.server.close();
    return Promise.resolve();
  }
}

function unbracket(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

function formatAddress(a: AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
