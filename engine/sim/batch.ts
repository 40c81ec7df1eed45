/**
 * Runs many seeded scenarios in a row and adds up what they did. Seeds are consecutive from a
 * base seed, so a run is reproducible from (base, count) and any one scenario from its seed.
 */
import { runScenario, type ScenarioResult, type ScenarioStats } from './runner.ts';
import { DEFAULT_SCENARIO_OPTIONS, generateScenario, type ScenarioOptions } from './scenario.ts';

export interface BatchTotals extends ScenarioStats {
  scenarios: number;
  endedEarly: number;
  failures: number;
}

export interface BatchResult {
  totals: BatchTotals;
  failed: ScenarioResult[];
  elapsedMs: number;
}

export interface BatchOptions {
  baseSeed: number;
  scenarios: number;
  scenario?: Partial<ScenarioOptions>;
  /** Called after each scenario (progress, early reporting). */
  onResult?: (result: ScenarioResult) => void;
  /** Stop after this many failures (the rest of the seeds are not run). */
  maxFailures?: number;
}

export function emptyTotals(): BatchTotals {
  return {
    scenarios: 0, endedEarly: 0, failures: 0, steps: 0, recoveries: 0, powerCuts: 0, processCrashes: 0, tornWrites: 0,
    injectedFaults: 0, corruptions: 0, bytesVerified: 0, readOnlyEntered: 0, recoveryRefusals: 0, excusedReadFailures: 0, failedCalls: 0,
  };
}

export function addResult(totals: BatchTotals, r: ScenarioResult): void {
  totals.scenarios++;
  if (!r.ok) totals.failures++;
  if (r.endedEarly) totals.endedEarly++;
  for (const key of Object.keys(r.stats) as Array<keyof ScenarioStats>) totals[key] += r.stats[key];
}

export async function runBatch(opts: BatchOptions): Promise<BatchResult> {
  const started = performance.now();
  const totals = emptyTotals();
  const failed: ScenarioResult[] = [];
  const scenarioOptions = { ...DEFAULT_SCENARIO_OPTIONS, ...opts.scenario };
  for (let i = 0; i < opts.scenarios; i++) {
    const result = await runScenario(generateScenario(opts.baseSeed + i, scenarioOptions));
    addResult(totals, result);
    if (!result.ok) failed.push(result);
    opts.onResult?.(result);
    if (opts.maxFailures !== undefined && failed.length >= opts.maxFailures) break;
  }
  return { totals, failed, elapsedMs: performance.now() - started };
}

export function formatTotals(t: BatchTotals, elapsedMs: number): string {
  const mib = (t.bytesVerified / (1024 * 1024)).toFixed(1);
  return [
    `scenarios ${t.scenarios} (${t.failures} failed, ${t.endedEarly} ended by a refused recovery) in ${(elapsedMs / 1000).toFixed(1)} s`,
    `steps ${t.steps}, recoveries ${t.recoveries}, power cuts ${t.powerCuts}, process crashes ${t.processCrashes}, torn writes ${t.tornWrites}`,
    `injected faults ${t.injectedFaults}, calls failed ${t.failedCalls}, read-only pools ${t.readOnlyEntered}`,
    `corruptions ${t.corruptions}, refused recoveries ${t.recoveryRefusals}, reads failed on damage ${t.excusedReadFailures}`,
    `bytes verified ${mib} MiB`,
  ].join('\n');
}

/** The command that replays one seed with its step log. */
export function reproduceCommand(seed: number, scenario: Partial<ScenarioOptions> = {}): string {
  const env = [
    scenario.corruption === false ? 'BRAID_SIM_CORRUPTION=0 ' : '',
    scenario.corruptMetadata ? 'BRAID_SIM_CORRUPT_META=1 ' : '',
    scenario.dropDirtyOnSyncFailure ? 'BRAID_SIM_DROP_DIRTY=1 ' : '',
  ].join('');
  return `${env}npm run sim -- --seed ${seed} --verbose`;
}

/** Scenario options from the environment (shared by the test and the command). */
export function scenarioOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<ScenarioOptions> {
  const out: Partial<ScenarioOptions> = {};
  if (env.BRAID_SIM_CORRUPTION === '0') out.corruption = false;
  if (env.BRAID_SIM_CORRUPT_META === '1') out.corruptMetadata = true;
  if (env.BRAID_SIM_DROP_DIRTY === '1') out.dropDirtyOnSyncFailure = true;
  if (env.BRAID_SIM_MAX_STEPS) out.maxSteps = Number(env.BRAID_SIM_MAX_STEPS);
  return out;
}
