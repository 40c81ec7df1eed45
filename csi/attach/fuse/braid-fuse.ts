/**
 * `braid-fuse`: the FUSE server process of the `fuse` attacher (csi/attach/fuse-attacher.ts),
 * one per attached export. The attacher starts it detached, in its own session, with its
 * stderr on a log file, so that it outlives the plugin that started it.
 *
 *   node braid-fuse.ts --nbd-socket PATH --export NAME --mount DIR --control PATH
 *                      [--reconnect-timeout-ms N] [--replay-limit-bytes N]
 *
 * Exit status: 0 after an unmount; 1 when start-up failed (the reason is the last log line); 2
 * for bad arguments. Logs are JSON lines (pino) on stderr.
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { runFuseServer, THREADPOOL_SIZE } from './fuse-server.ts';

function positiveInteger(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, not ${JSON.stringify(text)}`);
  return n;
}

async function main(): Promise<number> {
  const log = pino({ base: { pid: process.pid, component: 'braid-fuse' } }, pino.destination(2));
  let args;
  try {
    const { values } = parseArgs({
      options: {
        'nbd-socket': { type: 'string' },
        export: { type: 'string' },
        mount: { type: 'string' },
        control: { type: 'string' },
        'reconnect-timeout-ms': { type: 'string' },
        'replay-limit-bytes': { type: 'string' },
      },
      strict: true,
    });
    for (const required of ['nbd-socket', 'export', 'mount', 'control'] as const) {
      if (values[required] === undefined) throw new Error(`--${required} is required`);
    }
    const reconnectTimeoutMs = positiveInteger('reconnect-timeout-ms', values['reconnect-timeout-ms']);
    const replayLimitBytes = positiveInteger('replay-limit-bytes', values['replay-limit-bytes']);
    args = {
      socketPath: values['nbd-socket']!,
      exportName: values.export!,
      mountDir: values.mount!,
      controlSocket: values.control!,
      ...(reconnectTimeoutMs === undefined ? {} : { reconnectTimeoutMs }),
      ...(replayLimitBytes === undefined ? {} : { replayLimitBytes }),
    };
  } catch (err) {
    log.error({ err }, 'braid-fuse: bad arguments');
    return 2;
  }
  if (Number(process.env['UV_THREADPOOL_SIZE'] ?? 4) < THREADPOOL_SIZE) {
    log.warn({ UV_THREADPOOL_SIZE: process.env['UV_THREADPOOL_SIZE'] ?? null }, `UV_THREADPOOL_SIZE should be at least ${THREADPOOL_SIZE}`);
  }
  // Ending this process while mounted would leave a dead mount under the loop device: only an
  // unmount stops it (the attacher's detach does that).
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(signal, () => log.warn({ signal, mountDir: args.mountDir }, 'ignored: unmount the mount point to stop braid-fuse'));
  }
  try {
    await runFuseServer({ ...args, logger: log });
    return 0;
  } catch (err) {
    log.error({ err, exportName: args.exportName }, 'braid-fuse could not serve');
    return 1;
  }
}

process.exitCode = await main();
// pino's destination flushes on exit; nothing else may keep the process alive after an unmount.
process.exit();
