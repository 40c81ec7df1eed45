// `npm run torture -- --minutes N`: crash torture of `braid serve` for as long as asked.
// The rounds themselves are test/lib/crash-torture.ts, the same code the CI test
// (test/engine-crash.test.ts) runs for a bounded number of rounds; this file only parses the
// command line, runs rounds until the time or count is up, and reports.

import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Engine } from '../../test/harness.ts';
import { CrashTorture, defaultTortureOptions, describeRound, randomSeed } from '../../test/lib/crash-torture.ts';
import type { TortureTotals } from '../../test/lib/crash-torture.ts';
import { parseTortureArgs, reproduceCommand, USAGE, UsageError } from './options.ts';
import type { TortureCliOptions } from './options.ts';

const MiB = 1024 * 1024;

async function main(argv: readonly string[]): Promise<number> {
  let opts: TortureCliOptions;
  try {
    opts = parseTortureArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`torture: ${err.message}\n\n${USAGE}\n`);
    return 2;
  }
  if (opts.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const seed = opts.seed ?? randomSeed();
  const pool = await poolDirectory(opts.data);
  if (typeof pool === 'string') {
    process.stderr.write(`torture: ${pool}\n`);
    return 2;
  }
  const engine = new Engine(pool.dir, [], pool.logPath);
  const tortureOptions = defaultTortureOptions(seed, opts.volumes, opts.connections);
  const deadlineMs = opts.minutes === undefined ? Infinity : Date.now() + opts.minutes * 60_000;
  const maxRounds = opts.rounds ?? Infinity;
  const startedMs = Date.now();
  let interrupted = false;
  process.once('SIGINT', () => {
    interrupted = true;
    process.stdout.write('torture: interrupted: finishing the round in progress (Ctrl-C again to abandon it)\n');
  });

  const sizes = tortureOptions.volumes.map((v) => v.size).join(', ');
  process.stdout.write(
    `torture: seed ${seed}, ${opts.volumes} volumes (${sizes}), ${opts.connections} connections each, ` +
      `${opts.minutes === undefined ? '' : `${opts.minutes} min`}${opts.minutes !== undefined && opts.rounds !== undefined ? ' or ' : ''}` +
      `${opts.rounds === undefined ? '' : `${opts.rounds} rounds`}; pool ${pool.dir}, engine log ${pool.logPath}\n`,
  );

  let torture: CrashTorture | undefined;
  let failure: string | undefined;
  try {
    torture = await CrashTorture.start(engine, tortureOptions);
    while (!interrupted && torture.totals.rounds < maxRounds && Date.now() < deadlineMs) {
      const result = await torture.round();
      process.stdout.write(`[${clock(Date.now() - startedMs)}] ${describeRound(result)}\n`);
      if (result.problems.length > 0) {
        failure = `round ${result.round} found ${result.problems.length} problems:\n  ${result.problems.join('\n  ')}`;
        break;
      }
    }
    if (failure === undefined) {
      const stopped = await torture.stop();
      if (stopped.code !== 0) failure = `the engine did not stop cleanly after the last round (code ${stopped.code}, signal ${stopped.signal})`;
    }
  } catch (err) {
    failure = `the run could not go on: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    await engine.dispose();
  }

  const totals = torture?.totals;
  const failures = (totals?.failedRounds ?? 0) + (failure !== undefined && (totals?.failedRounds ?? 0) === 0 ? 1 : 0);
  process.stdout.write(summary(totals, failures, Date.now() - startedMs));
  const rounds = totals?.rounds ?? 1;
  process.stdout.write(`seed ${seed}; replay the random choices with: ${reproduceCommand({ rounds, seed, volumes: opts.volumes, connections: opts.connections })}\n`);
  process.stdout.write('(kill timing relative to the I/O is the machine\'s, so a replay is close, not exact)\n');
  if (failure !== undefined) {
    process.stdout.write(`\nFAILED: ${failure}\n--- engine log tail (${pool.logPath}) ---\n${shortLines(engine.logTail(30))}\n`);
    process.stdout.write(`pool kept for inspection in ${pool.dir}, engine log ${pool.logPath}\n`);
    return 1;
  }
  if (pool.temporary) await rm(pool.root, { recursive: true, force: true });
  return 0;
}

interface PoolPlace {
  dir: string;
  logPath: string;
  /** What to remove after a clean run, when temporary. */
  root: string;
  temporary: boolean;
}

/** The pool directory: a fresh temporary one, or --data (missing or empty). A string is an error. */
async function poolDirectory(data: string | undefined): Promise<PoolPlace | string> {
  if (data === undefined) {
    const root = await mkdtemp(join(tmpdir(), 'braid-torture-'));
    const dir = join(root, 'pool');
    await mkdir(dir);
    return { dir, logPath: join(root, 'engine.log'), root, temporary: true };
  }
  const dir = resolve(data);
  if (existsSync(dir) && readdirSync(dir).length > 0) return `--data ${dir} is not empty: torture needs a fresh pool`;
  await mkdir(dir, { recursive: true });
  return { dir, logPath: `${dir}.torture.log`, root: dir, temporary: false };
}

function summary(t: TortureTotals | undefined, failures: number, elapsedMs: number): string {
  const lines = [
    '',
    `torture summary after ${clock(elapsedMs)}:`,
    `  rounds           ${t?.rounds ?? 0}`,
    `  kills (-9)       ${t?.kills ?? 0} (${t?.recoveryKills ?? 0} during recovery)`,
    `  writes           ${t?.writesSent ?? 0} sent, ${t?.writesAcked ?? 0} acknowledged; trims ${t?.trimsSent ?? 0}; flushes ${t?.flushesCompleted ?? 0}`,
    `  durable ops      ${t?.durableOps ?? 0} block writes/trims promised durable and checked after the crash`,
    `  bytes verified   ${t?.bytesVerified ?? 0} (${((t?.bytesVerified ?? 0) / MiB).toFixed(0)} MiB)`,
    `  blocks checked   ${t?.blocksChecked ?? 0}`,
    `  failures         ${failures}`,
    '',
  ];
  return lines.join('\n');
}

/** Log lines cut to a screen's width or so: stack traces are in the kept log. */
function shortLines(text: string, maxChars = 400): string {
  return text
    .split('\n')
    .map((line) => (line.length > maxChars ? `${line.slice(0, maxChars)}...` : line))
    .join('\n');
}

function clock(ms: number): string {
  const s = Math.floor(ms / 1000);
  return `${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}`;
}

process.exitCode = await main(process.argv.slice(2));
