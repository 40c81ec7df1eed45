/**
 * Seeded simulation of the whole engine on a faulty simulated disk (engine/sim/): power cuts
 * with torn writes, process crashes, injected EIO and ENOSPC, damaged blocks, snapshots,
 * clones, cleaning, each scenario checked against a model. A fixed number of scenarios runs
 * (so a run is deterministic); BRAID_SIM_SCENARIOS and BRAID_SIM_SEED change the count and the
 * first seed, BRAID_SIM_CORRUPTION=0 leaves the corruption scenarios out.
 */
import { describe, expect, it } from 'vitest';
import { formatTotals, reproduceCommand, runBatch, scenarioOptionsFromEnv } from './batch.ts';

// About a minute of CPU on the 2-core CI machine.
const DEFAULT_SCENARIOS = 1000;

function envInteger(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

describe('simulation: the engine on a faulty disk against a model', () => {
  const scenarios = envInteger('BRAID_SIM_SCENARIOS', DEFAULT_SCENARIOS);
  const baseSeed = envInteger('BRAID_SIM_SEED', 1);
  const options = scenarioOptionsFromEnv();

  it(`keeps every promise in ${scenarios} seeded scenarios from seed ${baseSeed}`, { timeout: 30 * 60_000 }, async () => {
    const batch = await runBatch({ baseSeed, scenarios, scenario: options });
    const lines = [formatTotals(batch.totals, batch.elapsedMs)];
    for (const r of batch.failed) {
      lines.push(`seed ${r.seed} failed at step ${r.failure!.step} (${r.failure!.description}): ${r.failure!.message}`);
      lines.push(`  reproduce: ${reproduceCommand(r.seed, options)}`);
    }
    console.log(lines.join('\n'));
    expect(batch.failed.map((r) => r.seed), `failing seeds; reproduce with: ${batch.failed[0] ? reproduceCommand(batch.failed[0].seed, options) : ''}`).toEqual([]);
    expect(batch.totals.scenarios).toBe(scenarios);
  });
});
