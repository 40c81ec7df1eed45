/**
 * Crash torture: concurrent writers on several volumes, kill -9 of the engine at a random
 * moment (and now and then again during recovery), restart, and a block-by-block check of every
 * volume against what the writers know was acknowledged and flushed. The rounds are
 * test/lib/crash-torture.ts, the model and checker test/lib/crash-workload.ts; this file runs a
 * bounded number of rounds, `npm run torture -- --minutes N` runs the same rounds for longer.
 *
 * BRAID_CRASH_ROUNDS sets the number of rounds (default 20); BRAID_CRASH_SEED replays a run's
 * random choices (sizes of writes, flush points, kill delays; thread timing is not replayable).
 */
import { describe, it, expect } from 'vitest';
import { Engine, printLogsOnFailure, qemuIo } from './harness.ts';
import { CrashTorture, defaultTortureOptions, describeRound, randomSeed } from './lib/crash-torture.ts';
import { BLOCK_BYTES, CrashModel, ZEROS, fillBlock } from './lib/crash-workload.ts';

printLogsOnFailure();

const ROUNDS = Number.parseInt(process.env['BRAID_CRASH_ROUNDS'] ?? '20', 10);
const SEED = process.env['BRAID_CRASH_SEED'] ? Number.parseInt(process.env['BRAID_CRASH_SEED'], 10) >>> 0 : randomSeed();

describe('the crash checker itself', () => {
  it('flags lost flushed writes, reverted, torn, displaced and foreign blocks, and accepts the legal outcomes', () => {
    const model = new CrashModel(7, [{ name: 'm', index: 0, sizeBytes: 16 * BLOCK_BYTES }]);
    const content = Buffer.alloc(16 * BLOCK_BYTES);
    const put = (block: number, gen: number, volume = 0, asBlock = block): void =>
      fillBlock(content.subarray(block * BLOCK_BYTES, (block + 1) * BLOCK_BYTES), 7, volume, asBlock, gen);
    // Round 1: blocks 0..3 written and flushed; the check makes them the baseline.
    model.beginRound();
    const g1 = model.takeGeneration();
    for (let b = 0; b < 4; b++) {
      const op = model.recordOp(0, b, g1, 'write');
      op.acked = op.durable = true;
      put(b, g1);
    }
    expect(model.checkVolume(0, content)).toEqual([]);

    // Round 2.
    model.beginRound();
    const g2 = model.takeGeneration();
    const g3 = model.takeGeneration();
    const durable = (b: number, g: number): void => {
      const op = model.recordOp(0, b, g, 'write');
      op.acked = op.durable = true;
    };
    durable(0, g2); // block 0: flushed g2, but reads g1 -> lost
    durable(1, g2); // block 1: flushed g2, then unflushed g3 sent -> g3 is legal
    model.recordOp(0, 1, g3, 'write');
    put(1, g3);
    model.recordOp(0, 2, g2, 'write'); // block 2: unflushed g2 -> old g1 is legal
    model.recordOp(0, 3, ZEROS, 'trim').acked = true; // block 3: unflushed trim -> zeros legal
    content.fill(0, 3 * BLOCK_BYTES, 4 * BLOCK_BYTES);
    put(5, g2); // block 5: never written, holds a generation -> invented
    put(6, g1, 0, 9); // block 6: holds block 9's data -> foreign
    put(7, g1);
    content[7 * BLOCK_BYTES + 100]! ^= 1; // block 7: torn
    content.copy(content, 8 * BLOCK_BYTES + 1, 0, BLOCK_BYTES - 1); // block 8: displaced by one byte
    const problems = model.checkVolume(0, content).join('\n');
    expect(problems).toMatch(/block 0 .*a flushed write was lost/);
    expect(problems).not.toMatch(/block [123] /);
    expect(problems).toMatch(/block 5 .*never sent/);
    expect(problems).toMatch(/block 6 .*foreign block/);
    expect(problems).toMatch(/block 7 .*torn block/);
    expect(problems).toMatch(/block 8 .*sits 1 bytes from this block's start/);

    // Round 3: nothing written; block 1 going back to g1 is a revert.
    model.beginRound();
    put(1, g1);
    expect(model.checkVolume(0, content).join('\n')).toMatch(/block 1 .*reverted from/);
  });
});

describe('kill -9 during concurrent writes and flushes', () => {
  it(`keeps every flushed write and invents nothing, over ${ROUNDS} crash rounds (seed ${SEED})`, async () => {
    console.log(`engine-crash: seed ${SEED}, ${ROUNDS} rounds (replay with BRAID_CRASH_SEED=${SEED})`);
    const torture = await CrashTorture.start(await Engine.create(), defaultTortureOptions(SEED));
    for (let round = 1; round <= ROUNDS; round++) {
      const result = await torture.round();
      console.log(`engine-crash: ${describeRound(result)}`);
      expect(result.problems, `seed ${SEED}, round ${round}: broken durability promises`).toEqual([]);
    }
    const t = torture.totals;
    console.log(
      `engine-crash: totals over ${t.rounds} rounds: kills ${t.kills} (${t.recoveryKills} during recovery), writes sent ${t.writesSent}, ` +
        `acked ${t.writesAcked}, trims ${t.trimsSent}, flushes ${t.flushesCompleted}, durable block-ops ${t.durableOps}, ` +
        `blocks checked ${t.blocksChecked}`,
    );
    // The test must have exercised something: writes were acknowledged and made durable.
    expect(t.writesAcked).toBeGreaterThan(0);
    expect(t.flushesCompleted).toBeGreaterThan(0);
    expect(t.durableOps).toBeGreaterThan(0);
    expect((await torture.stop()).code).toBe(0);
  });
});

describe('acceptance: a flushed qemu-io write survives kill -9', () => {
  it('write -P 0xab 0 1M + flush, kill -9, restart, read -P 0xab 0 1M passes', async () => {
    const engine = await Engine.create();
    await engine.start();
    await engine.createVolume('vm1', '1G');
    const uri = engine.uri('vm1');
    await qemuIo(uri, ['write -P 0xab 0 1M', 'flush']);
    expect((await engine.kill9()).signal).toBe('SIGKILL');
    await engine.start();
    const r = await qemuIo(uri, ['read -P 0xab 0 1M']);
    expect(r.stdout).toMatch(/read 1048576\/1048576 bytes at offset 0/);
    // And the rest of the volume was never written: zeros, no invented data.
    await qemuIo(uri, ['read -P 0 1M 1M', 'read -P 0 1023M 1M']);
    const stop = await engine.stop();
    expect(stop.code).toBe(0);
  });
});
