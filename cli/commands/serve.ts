/**
 * `braid serve`: runs the engine in the foreground until SIGINT or SIGTERM, then closes it
 * cleanly (the pool writes its checkpoint) and exits 0. Logs are JSON lines (pino) on stdout;
 * the "ready" line carries the socket paths and the NBD URI template, both in its message for
 * people and as fields for machines.
 */
import { resolve } from 'node:path';
import { Option } from 'commander';
import type { Command } from 'commander';
import { pino } from 'pino';
import type { Logger } from '../../engine/logger.ts';
import type { CliContext } from '../context.ts';
import { addDataOption, parseHostPort, parseSizeArgument } from '../options.ts';
import { nbdUri } from '../output.ts';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

interface ServeOptions {
  data: string;
  capacity?: string;
  cacheSize?: string;
  metricsAddr?: string;
  logLevel: string;
}

export function registerServeCommand(program: Command, ctx: CliContext): void {
  addDataOption(program.command('serve'), ctx.env)
    .description('run the engine in the foreground: NBD on DIR/nbd.sock, the engine API on DIR/engine.sock')
    .option('--capacity <SIZE>', "pool capacity: bytes, or with a K/M/G/T suffix (default: the pool's own)")
    .option('--cache-size <SIZE>', 'block cache size (accepted, not used yet)')
    .option('--metrics-addr <HOST:PORT>', 'Prometheus metrics address (accepted, not used yet)')
    .addOption(new Option('--log-level <LEVEL>', 'log level').choices(LOG_LEVELS).default('info'))
    .action((opts: ServeOptions) => serve(opts, ctx));
}

async function serve(opts: ServeOptions, ctx: CliContext): Promise<void> {
  // Every argument is checked before anything starts.
  const capacityBytes = opts.capacity === undefined ? undefined : parseSizeArgument(opts.capacity);
  if (opts.cacheSize !== undefined) parseSizeArgument(opts.cacheSize);
  if (opts.metricsAddr !== undefined) parseHostPort(opts.metricsAddr);
  const dir = resolve(opts.data);

  const logger: Logger = pino({ level: opts.logLevel, base: { pid: process.pid } }, ctx.logStream);
  if (opts.cacheSize !== undefined) logger.warn('--cache-size is accepted but not used yet');
  if (opts.metricsAddr !== undefined) logger.warn('--metrics-addr is accepted but not used yet: no metrics are served');

  const daemon = await ctx.startDaemon({ dir, logger, ...(capacityBytes === undefined ? {} : { capacityBytes }) });
  const uriTemplate = nbdUri(daemon.nbdSocketPath, 'NAME');
  logger.info(
    { dir, engineSocket: daemon.engineSocketPath, nbdSocket: daemon.nbdSocketPath, nbdUriTemplate: uriTemplate },
    `braid ready: engine API unix:${daemon.engineSocketPath}, NBD ${uriTemplate}`,
  );

  const signal = await ctx.waitForShutdown();
  logger.info({ signal }, 'shutting down');
  await daemon.close();
  logger.info('stopped');
}
