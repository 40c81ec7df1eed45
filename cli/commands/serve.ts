/**
 * `braid serve`: runs the engine in the foreground until SIGINT or SIGTERM, then closes it
 * cleanly (the pool writes its checkpoint) and exits 0. Logs are JSON lines (pino) on stdout;
 * the "ready" line carries the socket paths and the NBD URI template, both in its message for
 * people and as fields for machines.
 *
 * Local mode (DESIGN §5): once the engine is up, the CSI services (Identity, Controller, Node)
 * answer on DIR/csi.sock (--csi-endpoint), for this node (--node-id, the host name by default).
 * Order: engine, then CSI, so that the first CSI call finds an engine; on the way down CSI
 * closes first, so no CSI call is left talking to a closing engine.
 */
import { hostname, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { Option } from 'commander';
import type { Command } from 'commander';
import { pino } from 'pino';
import type { LocalCsi } from '../../csi/local-mode.ts';
import { socketPathOf } from '../../csi/socket.ts';
import type { EngineDaemonOptions } from '../../engine/daemon.ts';
import { EngineError } from '../../engine/errors.ts';
import type { Logger } from '../../engine/logger.ts';
import { DEFAULT_MAX_REQUEST_BYTES } from '../../engine/nbd/protocol.ts';
import type { NbdLimits } from '../../engine/nbd/server.ts';
import { loadTlsCredentials, TlsFileError } from '../../engine/nbd/tls-credentials.ts';
import { applySocketAccess, DEFAULT_SOCKET_MODE, parseSocketMode, resolveGroup, withPrivateUmask } from '../../engine/socket-access.ts';
import type { SocketAccess } from '../../engine/socket-access.ts';
import type { CliContext, StartedDaemon } from '../context.ts';
import { UsageError } from '../errors.ts';
import { addDataOption, parseCountArgument, parseHostPort, parseSizeArgument } from '../options.ts';
import { nbdUri } from '../output.ts';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

interface ServeOptions {
  data: string;
  capacity?: string;
  cacheSize?: string;
  metricsAddr?: string;
  socketMode?: string;
  socketGroup?: string;
  logLevel: string;
  csiEndpoint?: string;
  nodeId?: string;
  nodeStateDir?: string;
  maxConnections?: string;
  maxInflightWriteBytes?: string;
  nbdListen?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  nbdTcpInsecure?: boolean;
}

export function registerServeCommand(program: Command, ctx: CliContext): void {
  addDataOption(program.command('serve'), ctx.env)
    .description('run the engine in the foreground: NBD on DIR/nbd.sock, the engine API on DIR/engine.sock, CSI on DIR/csi.sock')
    .option('--capacity <SIZE>', "pool capacity: bytes, or with a K/M/G/T suffix (default: the pool's own)")
    .option('--cache-size <SIZE>', 'shared block cache (verified blocks by disk location): bytes or K/M/G/T (default: 1/16 of RAM, at most 4G)')
    .option('--metrics-addr <HOST:PORT>', 'serve Prometheus metrics on http://HOST:PORT/metrics (port 0: any free port)')
    .option('--socket-mode <MODE>', 'mode of nbd.sock, engine.sock and csi.sock, octal (default 0600)')
    .option('--socket-group <GROUP>', 'group (name or gid) of the sockets; the pool directory gets it too, with g+x')
    .option('--csi-endpoint <ENDPOINT>', 'CSI socket: unix:///path or a path (default: unix://DIR/csi.sock)')
    .option('--node-id <ID>', 'this node in CSI topology and NodeGetInfo (default: the host name)')
    .option('--node-state-dir <DIR>', 'where the CSI node service records staged volumes (default: DIR/node)')
    .option('--max-connections <N>', 'open NBD connections beyond which new ones are refused (default: 1024)')
    .option('--max-inflight-write-bytes <SIZE>', 'NBD write data in flight over all connections before reading pauses (default: 256M, at least 32M)')
    .option('--nbd-listen <HOST:PORT>', 'also serve NBD on TCP (port 0: any free port); needs --tls-cert, --tls-key and --tls-ca')
    .option('--tls-cert <FILE>', 'PEM certificate the NBD TCP listener presents (SAN: the names/addresses clients use)')
    .option('--tls-key <FILE>', 'PEM private key of --tls-cert (unencrypted; keep it readable by the daemon only)')
    .option('--tls-ca <FILE>', 'PEM CA certificate(s): NBD TCP clients must present a certificate signed by one')
    .option('--nbd-tcp-insecure', 'serve --nbd-listen as plain TCP without TLS: anyone who reaches the port gets every volume; tests only')
    .addOption(new Option('--log-level <LEVEL>', 'log level').choices(LOG_LEVELS).default('info'))
    .action((opts: ServeOptions) => serve(opts, ctx));
}

async function serve(opts: ServeOptions, ctx: CliContext): Promise<void> {
  // Loaded here, not at the top: the CSI modules parse csi.proto when loaded, which every other
  // command would pay for (about 0.1 s).
  const { CSI_SOCKET_NAME } = await import('../../csi/local-mode.ts');
  const { NODE_STATE_DIR_NAME } = await import('../../csi/node-setup.ts');
  // Every argument is checked before anything starts.
  const capacityBytes = opts.capacity === undefined ? undefined : parseSizeArgument(opts.capacity);
  const cacheBytes = opts.cacheSize === undefined ? defaultCacheBytes() : parseSizeArgument(opts.cacheSize);
  const metrics = opts.metricsAddr === undefined ? undefined : parseHostPort(opts.metricsAddr);
  const access = await socketAccessOf(opts);
  const nbd = nbdLimitsOf(opts);
  const nbdTcp = await nbdTcpOf(opts);
  const dir = resolve(opts.data);
  const csiEndpoint = opts.csiEndpoint ?? `unix://${join(dir, CSI_SOCKET_NAME)}`;
  const csiSocketPath = csiSocketOf(csiEndpoint);
  if (opts.nodeId === '') throw new UsageError('--node-id must not be empty');
  const nodeId = opts.nodeId ?? hostname();
  const nodeStateDir = resolve(opts.nodeStateDir ?? join(dir, NODE_STATE_DIR_NAME));

  const logger: Logger = pino({ level: opts.logLevel, base: { pid: process.pid } }, ctx.logStream);

  const daemon = await ctx.startDaemon({
    dir,
    logger,
    ...(capacityBytes === undefined ? {} : { capacityBytes }),
    cacheBytes,
    ...(metrics === undefined ? {} : { metrics }),
    socketMode: access.mode,
    ...(access.gid === undefined ? {} : { socketGid: access.gid }),
    nbd,
    ...(nbdTcp === undefined ? {} : { nbdTcp }),
  });
  const csi = await startCsi(daemon, { dir, logger, nodeId, nodeStateDir, endpoint: csiEndpoint, access });
  const uriTemplate = nbdUri(daemon.nbdSocketPath, 'NAME');
  const metricsUrl = daemon.metricsAddress === undefined ? undefined : `http://${daemon.metricsAddress}/metrics`;
  const nbdTcpUriTemplate = daemon.nbdTcpAddress === undefined ? undefined : `${nbdTcp?.tls === null ? 'nbd' : 'nbds'}://${daemon.nbdTcpAddress}/NAME`;
  logger.info(
    {
      dir,
      engineSocket: daemon.engineSocketPath,
      nbdSocket: daemon.nbdSocketPath,
      nbdUriTemplate: uriTemplate,
      csiSocket: csiSocketPath,
      nodeId,
      socketMode: `0${access.mode.toString(8)}`,
      ...(access.gid === undefined ? {} : { socketGid: access.gid }),
      ...(metricsUrl === undefined ? {} : { metricsUrl }),
      ...(nbdTcpUriTemplate === undefined ? {} : { nbdTcpAddress: daemon.nbdTcpAddress, nbdTcpUriTemplate, nbdTcpTls: nbdTcp?.tls !== null }),
      ...(nbdTcp === undefined || nbdTcp.tls === null
        ? {}
        : { nbdTlsServerCert: nbdTcp.tls.serverSubject, nbdTlsServerCertValidTo: nbdTcp.tls.serverValidTo.toISOString(), nbdTlsClientCas: nbdTcp.tls.caSubjects }),
    },
    `braid ready: engine API unix:${daemon.engineSocketPath}, NBD ${uriTemplate}, CSI unix:${csiSocketPath}` +
      (nbdTcpUriTemplate === undefined ? '' : `, NBD over TCP ${nbdTcpUriTemplate}${nbdTcp?.tls === null ? ' (NO TLS)' : ' (TLS, client certificate required)'}`) +
      (metricsUrl === undefined ? '' : `, metrics ${metricsUrl}`),
  );

  const signal = await ctx.waitForShutdown();
  logger.info({ signal }, 'shutting down');
  try {
    await csi.close();
  } finally {
    await daemon.close();
  }
  logger.info('stopped');
}

/** --socket-mode and --socket-group, checked before anything starts (bad ones are usage errors). */
async function socketAccessOf(opts: ServeOptions): Promise<SocketAccess> {
  try {
    const mode = opts.socketMode === undefined ? DEFAULT_SOCKET_MODE : parseSocketMode(opts.socketMode);
    if (opts.socketGroup === undefined) return { mode };
    return { mode, gid: await resolveGroup(opts.socketGroup) };
  } catch (err) {
    if (err instanceof EngineError && err.code === 'INVALID_ARGUMENT') throw new UsageError(err.message);
    throw err;
  }
}

/** The NBD limits given on the command line; absent ones keep the server's defaults. */
function nbdLimitsOf(opts: ServeOptions): NbdLimits {
  const limits: NbdLimits = {};
  if (opts.maxConnections !== undefined) limits.maxConnections = parseCountArgument('--max-connections', opts.maxConnections);
  if (opts.maxInflightWriteBytes !== undefined) {
    const bytes = parseSizeArgument(opts.maxInflightWriteBytes);
    // The largest NBD WRITE (the advertised maximum block size) must fit, or it would wait forever.
    if (bytes < DEFAULT_MAX_REQUEST_BYTES) {
      throw new UsageError(`--max-inflight-write-bytes must be at least 32M (the largest NBD write), not ${JSON.stringify(opts.maxInflightWriteBytes)}`);
    }
    limits.maxInflightWriteBytes = bytes;
  }
  return limits;
}

/**
 * --nbd-listen and its TLS files. TCP without TLS only with --nbd-tcp-insecure; a missing or
 * stray flag, and a TLS file that cannot be used, are usage errors found before anything starts.
 */
async function nbdTcpOf(opts: ServeOptions): Promise<EngineDaemonOptions['nbdTcp']> {
  const tlsFlags = { '--tls-cert': opts.tlsCert, '--tls-key': opts.tlsKey, '--tls-ca': opts.tlsCa };
  const given = Object.entries(tlsFlags).filter(([, value]) => value !== undefined).map(([flag]) => flag);
  const missing = Object.entries(tlsFlags).filter(([, value]) => value === undefined).map(([flag]) => flag);
  if (opts.nbdListen === undefined) {
    const stray = opts.nbdTcpInsecure === true ? [...given, '--nbd-tcp-insecure'] : given;
    if (stray.length > 0) throw new UsageError(`${stray.join(', ')} ${stray.length === 1 ? 'applies' : 'apply'} only with --nbd-listen`);
    return undefined;
  }
  const { host, port } = parseHostPort(opts.nbdListen);
  if (opts.nbdTcpInsecure === true) {
    if (given.length > 0) throw new UsageError(`--nbd-tcp-insecure turns TLS off; do not give it with ${given.join(', ')}`);
    return { host, port, tls: null };
  }
  if (missing.length > 0) {
    throw new UsageError(
      `--nbd-listen requires TLS with client certificates: missing ${missing.join(', ')} (--nbd-tcp-insecure serves plain TCP, for tests only)`,
    );
  }
  try {
    return { host, port, tls: await loadTlsCredentials({ certFile: opts.tlsCert as string, keyFile: opts.tlsKey as string, caFile: opts.tlsCa as string }) };
  } catch (err) {
    if (err instanceof TlsFileError) throw new UsageError(err.message);
    throw err;
  }
}

/** The endpoint's socket path; a malformed endpoint is a usage error, found before anything starts. */
function csiSocketOf(endpoint: string): string {
  try {
    return socketPathOf(endpoint);
  } catch (err) {
    throw new UsageError(`invalid --csi-endpoint ${JSON.stringify(endpoint)}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

interface CsiStart {
  dir: string;
  logger: Logger;
  nodeId: string;
  nodeStateDir: string;
  endpoint: string;
  access: SocketAccess;
}

/** Local-mode CSI in front of the started engine; the engine is closed again if CSI cannot start. */
async function startCsi(daemon: StartedDaemon, opts: CsiStart): Promise<LocalCsi> {
  try {
    const { startLocalCsi } = await import('../../csi/local-mode.ts');
    const { createNodeService } = await import('../../csi/node-setup.ts');
    const node = await createNodeService({
      nodeId: opts.nodeId,
      stateDir: opts.nodeStateDir,
      logger: opts.logger,
      defaultNbdSocketPath: daemon.nbdSocketPath,
    });
    // Born owner-only and 0600 at bind like the engine's sockets, then given its group and mode.
    const csi = await withPrivateUmask(() =>
      startLocalCsi({ dir: opts.dir, logger: opts.logger, nodeId: opts.nodeId, node, endpoint: opts.endpoint, socketMode: DEFAULT_SOCKET_MODE }),
    );
    try {
      await applySocketAccess(csi.server.socketPath, opts.access);
    } catch (err) {
      await csi.close();
      throw err;
    }
    return csi;
  } catch (err) {
    await daemon.close();
    throw err;
  }
}

/** A sixteenth of RAM: boot storms of clones fit, and the page cache keeps most memory. */
function defaultCacheBytes(): number {
  return Math.min(4 * 1024 ** 3, Math.floor(totalmem() / 16 / 4096) * 4096);
}
