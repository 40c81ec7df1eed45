/**
 * How the CLI reports failure: one line on stderr, `braid: <message>`, and an exit status.
 *   0  success
 *   1  the operation failed (the engine refused it, or no engine is running)
 *   2  the command line is wrong (unknown command or option, missing argument, bad SIZE):
 *      detected before anything is asked of the engine
 */
import { EngineNotRunningError } from '../engine/api/client.ts';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** A command-line mistake the CLI found itself (exit status 2). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** The one stderr line for an error, without the `braid: ` prefix. */
export function describeError(err: unknown, dataDir: string | undefined): string {
  if (err instanceof EngineNotRunningError && dataDir !== undefined) {
    return `no engine running at ${dataDir} (start it with \`braid serve --data ${dataDir}\`)`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** `braid: <message>` on exactly one line. */
export function errorLine(message: string): string {
  return `braid: ${message.trim().replace(/\s*\n\s*/g, ' ')}\n`;
}
