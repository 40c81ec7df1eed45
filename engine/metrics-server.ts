/**
 * `braid serve --metrics-addr HOST:PORT`: a plain HTTP server with one page, GET /metrics, in
 * Prometheus' text format. It serves figures only (no control, no volume names) and reads
 * nothing from requests but the method and path; still, it is unauthenticated, so bind it to
 * loopback or a network only the scraper reaches (docs/security.md).
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EngineError } from './errors.ts';
import type { Logger } from './logger.ts';
import type { EngineMetrics } from './metrics.ts';

export const METRICS_PATH = '/metrics';

export class MetricsServer {
  readonly #metrics: EngineMetrics;
  readonly #logger: Logger;
  #server: Server | undefined;

  constructor(metrics: EngineMetrics, logger: Logger) {
    this.#metrics = metrics;
    this.#logger = logger;
  }

  /** Listens; resolves with the bound address as HOST:PORT (port 0 picks a free one). */
  async listen(host: string, port: number): Promise<string> {
    if (this.#server !== undefined) throw new Error('MetricsServer is already listening');
    const server = createServer((req, res) => this.#handle(req, res));
    // Scrapers keep connections alive; close() must not wait for them.
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // An empty HOST (`:9090`) is every address.
      server.listen(host === '' ? { port } : { host: unbracket(host), port }, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      const reason = err instanceof Error ? err.message : String(err);
      throw new EngineError('FAILED_PRECONDITION', `cannot serve metrics on ${host}:${port}: ${reason}`, { cause: err });
    });
    server.on('error', (err) => this.#logger.error({ err }, 'metrics server error'));
    this.#server = server;
    const address = formatAddress(server.address() as AddressInfo);
    this.#logger.info({ address, path: METRICS_PATH }, `metrics on http://${address}${METRICS_PATH}`);
    return address;
  }

  /** Stops listening and drops idle keep-alive connections. Idempotent. */
  async close(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      reply(res, 405, 'text/plain; charset=utf-8', 'only GET\n', { allow: 'GET, HEAD' });
      return;
    }
    if (path !== METRICS_PATH) {
      reply(res, 404, 'text/plain; charset=utf-8', `not found: metrics are at ${METRICS_PATH}\n`);
      return;
    }
    this.#metrics.render().then(
      (body) => reply(res, 200, this.#metrics.contentType, body), // Node sends no body for HEAD
      (err: unknown) => {
        // A pool closing under a scrape: say so, and keep serving.
        this.#logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'collecting metrics failed');
        reply(res, 500, 'text/plain; charset=utf-8', 'collecting metrics failed\n');
      },
    );
  }
}

function reply(res: ServerResponse, status: number, contentType: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

/** `[::1]` as given on the command line is `::1` to listen(). */
function unbracket(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

function formatAddress(a: AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}
