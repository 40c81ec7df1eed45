/**
 * Crash torture: concurrent writers on several volumes, kill -9 of the engine at a random
 * moment, restart, and a block-by-block check of every volume against what the writers know
 * was acknowledged and flushed (see test/lib/crash-workload.ts for the model). Rounds continue
 * on the same pool, so recovery is exercised on top of earlier recoveries.
 *
 * BRAID_CRASH_ROUNDS sets the number of rounds (default 20); BRAID_CRASH_SEED replays a run's
 * random choices (sizes of writes, flush points, kill delays; thread timing is not replayable).
 */
import { describe, it, expect } from 'vitest';
import { Engine, MiB, printLogsOnFailure, qemuIo, randomInt, seededRandom, sleep } from './harness.ts';
import { BLOCK_BYTES, CrashModel, ZEROS, fillBlock } from './lib/crash-workload.ts';
import type { RoundStats, VolumeSpec, WorkloadOptions } from './lib/crash-workload.ts';
import { NbdClient, NbdRequestError } from './lib/nbd-client.ts';

printLogsOnFailure();

const ROUNDS = Number.parseInt(process.env['BRAID_CRASH_ROUNDS'] ?? '20', 10);
const SEED = process.env['BRAID_CRASH_SEED'] ? Number.parseInt(process.env['BRAID_CRASH_SEED'], 10) >>> 0 : (Math.random() * 2 ** 32) >>> 0;

const VOLUMES: readonly { name: string; size: string; sizeBytes: number }[] = [
  { name: 'crash0', size: '4M', sizeBytes: 4 * MiB },
  { name: 'crash1', size: '8M', sizeBytes: 8 * MiB },
  { name: 'crash2', size: '8M', sizeBytes: 8 * MiB },
  { name: 'crash3', size: '16M', sizeBytes: 16 * MiB },
];

const WORKLOAD: WorkloadOptions = {
  connectionsPerVolume: 2,
  depth: 8,
  maxBlocksPerWrite: 16,
  fuaProbability: 0.1,
  trimProbability: 0.05,
  flushEvery: 12,
};

/**
 * Reads a whole volume in 1 MiB requests. A request that fails is reported (by range and
 * errno) instead of thrown, so that one failure shows the full extent of the damage.
 */
async function readVolume(socketPath: string, name: string, sizeBytes: number): Promise<{ content: Buffer; failures: string[] }> {
  const client = await NbdClient.connect(socketPath, name);
  const content = Buffer.alloc(sizeBytes);
  const failures: string[] = [];
  try {
    expect(client.info.sizeBytes, `${name} export size`).toBe(sizeBytes);
    const chunk = MiB;
    const reads: Promise<void>[] = [];
    for (let at = 0; at < sizeBytes; at += chunk) {
      const n = Math.min(chunk, sizeBytes - at);
      const pos = at;
      reads.push(
        client.read(pos, n).then(
          (data) => void data.copy(content, pos),
          (err: unknown) => {
            if (!(err instanceof NbdRequestError)) throw err;
            failures.push(`${name}: READ [${pos}, ${pos + n}) failed with errno ${err.errno}`);
          },
        ),
      );
    }
    await Promise.all(reads);
    return { content, failures };
  } finally {
    await client.disconnect();
  }
}

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
    const rand = seededRandom(SEED);
    const engine = await Engine.create();
    await engine.start();
    for (const v of VOLUMES) await engine.createVolume(v.name, v.size);
    const specs: VolumeSpec[] = VOLUMES.map((v, index) => ({ name: v.name, index, sizeBytes: v.sizeBytes }));
    const model = new CrashModel(SEED, specs);
    const totals: RoundStats = { writesSent: 0, writesAcked: 0, trimsSent: 0, flushesCompleted: 0, durableOps: 0, unexpectedErrors: [] };
    let recoveryCrashes = 0;

    for (let round = 1; round <= ROUNDS; round++) {
      const context = `seed ${SEED}, round ${round}`;
      let phase = 'writing';
      try {
        model.beginRound();
        const writers = model.runWriters(engine.nbdSocket, WORKLOAD, rand);
        const killAfterMs = randomInt(rand, 30, 1500);
        await sleep(killAfterMs);
        const killed = await engine.kill9();
        expect(killed.signal, `the engine died on its own before kill -9 (code ${killed.code})`).toBe('SIGKILL');
        const stats = await writers.done;
        totals.writesSent += stats.writesSent;
        totals.writesAcked += stats.writesAcked;
        totals.trimsSent += stats.trimsSent;
        totals.flushesCompleted += stats.flushesCompleted;
        totals.durableOps += stats.durableOps;
        expect(stats.unexpectedErrors, 'NBD errors during the workload').toEqual([]);

        // Now and then, crash again during recovery, before the engine is ready.
        if (rand() < 0.2) {
          phase = 'crashing it during recovery';
          recoveryCrashes++;
          engine.spawn();
          await sleep(randomInt(rand, 0, 600));
          const again = await engine.kill9();
          expect(again.signal, `the engine exited by itself during recovery (code ${again.code})`).toBe('SIGKILL');
        }

        phase = 'restarting';
        await engine.start();
        phase = 'verifying';
        expect(await engine.listVolumes(), 'volumes after restart').toEqual(VOLUMES.map((v) => ({ name: v.name, sizeBytes: v.sizeBytes })));
        const problems: string[] = [];
        for (const spec of specs) {
          const { content, failures } = await readVolume(engine.nbdSocket, spec.name, spec.sizeBytes);
          if (failures.length > 0) {
            problems.push(...failures);
            continue;
          }
          const found = model.checkVolume(spec.index, content);
          if (found.length > 0) {
            // Tell a read-path fault from damage on disk: does a second read agree with the first?
            const again = await readVolume(engine.nbdSocket, spec.name, spec.sizeBytes);
            const same = again.failures.length === 0 && again.content.equals(content);
            found.push(`${spec.name}: a second read of the volume ${same ? 'returns the same bytes' : 'returns DIFFERENT bytes'}`);
          }
          problems.push(...found);
        }
        console.log(
          `engine-crash: round ${round}: kill after ${killAfterMs} ms; writes sent ${stats.writesSent}, acked ${stats.writesAcked}, ` +
            `trims ${stats.trimsSent}, flushes ${stats.flushesCompleted}, durable block-ops ${stats.durableOps}`,
        );
        expect(problems, 'blocks that break the durability promise').toEqual([]);
      } catch (err) {
        if (err instanceof Error) err.message = `${context}, while ${phase}: ${err.message}`;
        throw err;
      }
    }

    console.log(
      `engine-crash: totals over ${ROUNDS} rounds: writes sent ${totals.writesSent}, acked ${totals.writesAcked}, trims ${totals.trimsSent}, ` +
        `flushes ${totals.flushesCompleted}, durable block-ops ${totals.durableOps}, crashes during recovery ${recoveryCrashes}`,
    );
    // The test must have exercised something: writes were acknowledged and made durable.
    expect(totals.writesAcked).toBeGreaterThan(0);
    expect(totals.flushesCompleted).toBeGreaterThan(0);
    expect(totals.durableOps).toBeGreaterThan(0);
    await engine.stop();
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
