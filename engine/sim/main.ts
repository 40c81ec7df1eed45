/**
 * `npm run sim -- --seed S [--scenarios N] [--verbose]`
 *
 * With --scenarios N, runs N scenarios from seed S on and prints totals and every failing
 * seed; without it, replays the one scenario of seed S (--verbose prints it step by step).
 * Environment: BRAID_SIM_CORRUPTION=0 leaves corruption out, BRAID_SIM_CORRUPT_META=1 also
 * damages pool.json, BRAID_SIM_DROP_DIRTY=1 makes failed fdatasyncs drop dirty data as Linux does.
 */
import { parseArgs } from 'node:util';
import { formatTotals, reproduceCommand, runBatch, scenarioOptionsFromEnv } from './batch.ts';
import { runScenario } from './runner.ts';
import { DEFAULT_SCENARIO_OPTIONS, describeStep, generateScenario } from './scenario.ts';

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: npm run sim -- --seed S [--scenarios N] [--verbose]\n`);
  process.exit(2);
}

function integer(value: string | undefined, what: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) usage(`${what} must be a non-negative integer, got "${value}"`);
  return n;
}

async function main(): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      options: { seed: { type: 'string' }, scenarios: { type: 'string' }, verbose: { type: 'boolean', short: 'v' }, 'show-steps': { type: 'boolean' } },
      strict: true,
    }));
  } catch (err) {
    usage((err as Error).message);
  }
  const seed = integer(values.seed, '--seed', 1);
  const options = scenarioOptionsFromEnv();
  if (values.scenarios === undefined) {
    const scenario = generateScenario(seed, { ...DEFAULT_SCENARIO_OPTIONS, ...options });
    if (values['show-steps']) for (const [i, s] of scenario.steps.entries()) process.stdout.write(`step ${i}: ${describeStep(s)} ${JSON.stringify(s)}\n`);
    const result = await runScenario(scenario, values.verbose ? { onLog: (line) => process.stdout.write(`${line}\n`) } : {});
    const s = result.stats;
    process.stdout.write(
      `seed ${seed}: ${result.ok ? 'ok' : 'FAILED'}${result.endedEarly ? ` (ended early: ${result.endedEarly})` : ''}; ` +
        `${s.steps} steps, ${s.recoveries} recoveries, ${s.powerCuts} power cuts, ${s.tornWrites} torn writes, ${s.injectedFaults} injected faults, ` +
        `${s.corruptions} corruptions, ${(s.bytesVerified / 1024).toFixed(0)} KiB verified\n`,
    );
    if (result.failure) {
      process.stdout.write(`failed at step ${result.failure.step} (${result.failure.description}):\n  ${result.failure.message}\n`);
      if (!values.verbose) process.stdout.write(`step log: ${reproduceCommand(seed, options)}\n`);
      process.exitCode = 1;
    }
    return;
  }
  const count = integer(values.scenarios, '--scenarios', 1);
  let done = 0;
  const batch = await runBatch({
    baseSeed: seed,
    scenarios: count,
    scenario: options,
    onResult: (r) => {
      done++;
      if (!r.ok) process.stdout.write(`seed ${r.seed} FAILED at step ${r.failure!.step} (${r.failure!.description}): ${r.failure!.message}\n`);
      else if (values.verbose) process.stdout.write(`seed ${r.seed} ok${r.endedEarly ? ` (${r.endedEarly})` : ''}\n`);
      if (done % 100 === 0 && !values.verbose) process.stderr.write(`${done}/${count}\r`);
    },
  });
  process.stdout.write(`${formatTotals(batch.totals, batch.elapsedMs)}\n`);
  if (batch.failed.length > 0) {
    process.stdout.write(`failing seeds: ${batch.failed.map((r) => r.seed).join(' ')}\nreplay one: ${reproduceCommand(batch.failed[0]!.seed, options)}\n`);
    process.exitCode = 1;
  }
}

await main();
