/**
 * What a CLI run talks to, as one object, so tests run the CLI in-process: output streams, the
 * environment, and the few things `serve` does to the process (start the daemon, wait for a
 * signal, where its logs go). `defaultContext()` is the real process.
 */
import type { EngineDaemonOptions } from '../engine/daemon.ts';

/** The part of a started daemon the CLI uses (engine/daemon.ts's EngineDaemon satisfies it). */
export interface StartedDaemon {
  nbdSocketPath: string;
  engineSocketPath: string;
  /** HOST:PORT of the metrics server, when --metrics-addr asked for one. */
  metricsAddress?: string;
  /** HOST:PORT of the NBD TCP listener, when --nbd-listen asked for one. */
  nbdTcpAddress?: string;
  close(): Promise<void>;
}

export interface CliContext {
  stdout(text: string): void;
  stderr(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
  startDaemon(opts: EngineDaemonOptions): Promise<StartedDaemon>;
  /** Resolves with the name of the signal that asks the engine to stop. */
  waitForShutdown(): Promise<string>;
  /** Where `serve` writes its JSON log lines. */
  logStream: { write(line: string): unknown };
}

export function defaultContext(): CliContext {
  return {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
    env: process.env,
    // Loaded only by `serve`: client commands stay fast and never load the storage engine.
    startDaemon: async (opts) => (await import('../engine/daemon.ts')).startEngineDaemon(opts),
    waitForShutdown: waitForSignal,
    logStream: process.stdout,
  };
}

/**
 * The first SIGINT or SIGTERM. Both listeners go once one fires, so a second signal during the
 * clean close gets Node's default action and ends the process at once (an escape hatch that is
 * safe: the engine recovers from a crash at any point).
 */
function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
