/**
 * The command line of `npm run torture`. Parsing is separate from running so that it can be
 * tested without starting engines.
 */
import { parseArgs } from 'node:util';

export const USAGE = `usage: npm run torture -- (--minutes N | --rounds R) [options]

Crash torture of \`braid serve\`: pipelined self-verifying writers on every volume (writes, FUA
writes, trims, flushes), kill -9 of the engine at a random moment (sometimes again during
recovery), restart, and a check of every block against what was acknowledged and flushed.

  --minutes N       run for N minutes (fractions allowed); the round in progress completes
  --rounds R        run R rounds (with --minutes too: whichever comes first)
  --seed S          replay the random choices of an earlier run (default: random)
  --volumes V       volumes in the pool (default 4; 4, 8, 8, 16 MiB, repeating)
  --connections C   writer connections per volume (default 2)
  --data DIR        pool directory, empty or missing (default: a temporary one, removed
                    after a clean run, kept after a failure)
  -h, --help        this text

Exit status: 0 when every round passed, 1 when a round found a broken promise or the engine
misbehaved, 2 for a usage error.`;

export interface TortureCliOptions {
  minutes: number | undefined;
  rounds: number | undefined;
  seed: number | undefined;
  volumes: number;
  connections: number;
  data: string | undefined;
  help: boolean;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function parseTortureArgs(argv: readonly string[]): TortureCliOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        minutes: { type: 'string' },
        rounds: { type: 'string' },
        seed: { type: 'string' },
        volumes: { type: 'string' },
        connections: { type: 'string' },
        data: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const help = values['help'] === true;
  const minutes = optionalNumber(values['minutes'], '--minutes', { min: Number.MIN_VALUE, integer: false });
  const rounds = optionalNumber(values['rounds'], '--rounds', { min: 1, integer: true });
  if (!help && minutes === undefined && rounds === undefined) throw new UsageError('say how long to run: --minutes N or --rounds R');
  const seed = optionalNumber(values['seed'], '--seed', { min: 0, max: 2 ** 32 - 1, integer: true });
  const volumes = optionalNumber(values['volumes'], '--volumes', { min: 1, max: 256, integer: true }) ?? 4;
  const connections = optionalNumber(values['connections'], '--connections', { min: 1, max: 64, integer: true }) ?? 2;
  const data = values['data'];
  if (data === '') throw new UsageError('--data must not be empty');
  return { minutes, rounds, seed, volumes, connections, data: typeof data === 'string' ? data : undefined, help };
}

function optionalNumber(
  text: string | boolean | undefined,
  flag: string,
  limits: { min: number; max?: number; integer: boolean },
): number | undefined {
  if (text === undefined) return undefined;
  const pattern = limits.integer ? /^\d+$/ : /^\d+(\.\d+)?$/;
  const n = typeof text === 'string' && pattern.test(text) ? Number(text) : NaN;
  const max = limits.max ?? Number.MAX_SAFE_INTEGER;
  if (!Number.isFinite(n) || n < limits.min || n > max) {
    const kind = limits.integer ? 'a whole number' : 'a number';
    throw new UsageError(`invalid ${flag} ${JSON.stringify(text)}: use ${kind} from ${limits.min === Number.MIN_VALUE ? 'above 0' : limits.min}${limits.max === undefined ? '' : ` to ${max}`}`);
  }
  return n;
}

/** The command that replays a run's random choices. */
export function reproduceCommand(o: { rounds: number; seed: number; volumes: number; connections: number }): string {
  return `npm run torture -- --rounds ${o.rounds} --seed ${o.seed} --volumes ${o.volumes} --connections ${o.connections}`;
}
