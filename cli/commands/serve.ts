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
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { Option } from 'commander';
import type { Command } from 'commander';
import { pino } from 'pino';
import type { LocalCsi } from '../../csi/local-mode.ts';
import { socketPathOf } from '../../csi/socket.ts';
import type { Logger } from '../../engine/logger.ts';
import type { CliContext, StartedDaemon } from '../context.ts';
import { UsageError } from '../errors.ts';
import { addDataOption, parseHostPort, parseSizeArgument } from '../options.ts';
import { nbdUri } from '../output.ts';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

interface ServeOptions {
  data: string;
  capacity?: string;
  cacheSize?: string;
  metricsAddr?: string;
  logLevel: string;
  csiEndpoint?: string;
  nodeId?: string;
  nodeStateDir?: string;
}

export function registerServeCommand(program: Command, ctx: CliContext): void {
  addDataOption(program.command('serve'), ctx.env)
    .description('run the engine in the foreground: NBD on DIR/nbd.sock, the engine API on DIR/engine.sock, CSI on DIR/csi.sock')
    .option('--capacity <SIZE>', "pool capacity: bytes, or with a K/M/G/T suffix (default: the pool's own)")
    .option('--cache-size <SIZE>', 'block cache size (accepted, not used yet)')
    .option('--metrics-addr <HOST:PORT>', 'Prometheus metrics address (accepted, not used yet)')
    .option('--csi-endpoint <ENDPOINT>', 'CSI socket: unix:///path or a path (default: unix://DIR/csi.sock)')
    .option('--node-id <ID>', 'this node in CSI topology and NodeGetInfo (default: the host name)')
    .option('--node-state-dir <DIR>', 'where the CSI node service records staged volumes (default: DIR/node)')
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
  if (opts.cacheSize !== undefined) parseSizeArgument(opts.cacheSize);
  if (opts.metricsAddr !== undefined) parseHostPort(opts.metricsAddr);
  const dir = resolve(opts.data);
  const csiEndpoint = opts.csiEndpoint ?? `unix://${join(dir, CSI_SOCKET_NAME)}`;
  const csiSocketPath = csiSocketOf(csiEndpoint);
  if (opts.nodeId === '') throw new UsageError('--node-id must not be empty');
  const nodeId = opts.nodeId ?? hostname();
  const nodeStateDir = resolve(opts.nodeStateDir ?? join(dir, NODE_STATE_DIR_NAME));

  const logger: Logger = pino({ level: opts.logLevel, base: { pid: process.pid } }, ctx.logStream);
  if (opts.cacheSize !== undefined) logger.warn('--cache-size is accepted but not used yet');
  if (opts.metricsAddr !== undefined) logger.warn('--metrics-addr is accepted but not used yet: no metrics are served');

  const daemon = await ctx.startDaemon({ dir, logger, ...(capacityBytes === undefined ? {} : { capacityBytes }) });
  const csi = await startCsi(daemon, { dir, logger, nodeId, nodeStateDir, endpoint: csiEndpoint });
  const uriTemplate = nbdUri(daemon.nbdSocketPath, 'NAME');
  logger.info(
    { dir, engineSocket: daemon.engineSocketPath, nbdSocket: daemon.nbdSocketPath, nbdUriTemplate: uriTemplate, csiSocket: csiSocketPath, nodeId },
    `braid ready: engine API unix:${daemon.engineSocketPath}, NBD ${uriTemplate}, CSI unix:${csiSocketPath}`,
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
    return await startLocalCsi({ dir: opts.dir, logger: opts.logger, nodeId: opts.nodeId, node, endpoint: opts.endpoint });
  } catch (err) {
    await daemon.close();
    throw err;
  }
}
