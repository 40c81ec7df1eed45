/**
 * One crash-torture run as a sequence of rounds, shared by the CI test (test/engine-crash.test.ts,
 * a bounded number of rounds) and `npm run torture` (hack/torture/, as long as asked).
 *
 * A round: writers on every volume (crash-workload.ts), kill -9 of the engine after a random
 * delay, now and then a second kill -9 while the engine is recovering, a restart, and a read of
 * every volume checked block by block against the model. Rounds continue on the same pool, so
 * each recovery starts from the state earlier recoveries left.
 *
 * Nothing here throws for a broken promise: a round reports what it found as `problems`, and the
 * caller decides (the test asserts, the CLI counts and stops). Exceptions mean the harness itself
 * could not go on (the engine would not start, a socket vanished).
 */
import { Engine, randomInt, seededRandom, sleep } from '../harness.ts';
import { BLOCK_BYTES, CrashModel } from './crash-workload.ts';
import type { RoundStats, VolumeSpec, WorkloadOptions } from './crash-workload.ts';
import { NbdClient, NbdRequestError } from './nbd-client.ts';

const MiB = 1024 * 1024;

export const DEFAULT_WORKLOAD: WorkloadOptions = {
  connectionsPerVolume: 2,
  depth: 8,
  maxBlocksPerWrite: 16,
  fuaProbability: 0.1,
  trimProbability: 0.05,
  flushEvery: 12,
};

/** Small volumes, so that a full read and check per round stays quick; sizes vary on purpose. */
const VOLUME_SIZES_MIB = [4, 8, 8, 16];

export interface TortureVolume extends VolumeSpec {
  /** The size as given to `braid volume create`. */
  size: string;
}

/** `count` volumes named crash0, crash1, ... cycling through 4, 8, 8 and 16 MiB. */
export function tortureVolumes(count: number): TortureVolume[] {
  return Array.from({ length: count }, (_, index) => {
    const mib = VOLUME_SIZES_MIB[index % VOLUME_SIZES_MIB.length]!;
    return { name: `crash${index}`, index, size: `${mib}M`, sizeBytes: mib * MiB };
  });
}

export interface TortureOptions {
  seed: number;
  volumes: readonly TortureVolume[];
  workload: WorkloadOptions;
  /** Kill delay after the writers start, uniformly in [min, max) milliseconds. */
  killAfterMs: { min: number; max: number };
  /** Chance per round of a second kill -9 during recovery. */
  recoveryCrashProbability: number;
}

export function defaultTortureOptions(seed: number, volumeCount = 4, connectionsPerVolume = DEFAULT_WORKLOAD.connectionsPerVolume): TortureOptions {
  return {
    seed,
    volumes: tortureVolumes(volumeCount),
    workload: { ...DEFAULT_WORKLOAD, connectionsPerVolume },
    killAfterMs: { min: 30, max: 1500 },
    recoveryCrashProbability: 0.2,
  };
}

export interface RoundResult {
  round: number;
  killAfterMs: number;
  /** Milliseconds the engine ran before the second kill, when recovery was crashed. */
  recoveryKillAfterMs: number | undefined;
  stats: RoundStats;
  bytesVerified: number;
  blocksChecked: number;
  /** Broken promises and unexpected behaviour; empty when the round passed. */
  problems: string[];
}

export interface TortureTotals {
  rounds: number;
  kills: number;
  recoveryKills: number;
  writesSent: number;
  writesAcked: number;
  trimsSent: number;
  flushesCompleted: number;
  durableOps: number;
  bytesVerified: number;
  blocksChecked: number;
  failedRounds: number;
}

/** A random 32-bit seed. */
export function randomSeed(): number {
  return (Math.random() * 2 ** 32) >>> 0;
}

export class CrashTorture {
  readonly engine: Engine;
  readonly opts: TortureOptions;
  readonly totals: TortureTotals = {
    rounds: 0,
    kills: 0,
    recoveryKills: 0,
    writesSent: 0,
    writesAcked: 0,
    trimsSent: 0,
    flushesCompleted: 0,
    durableOps: 0,
    bytesVerified: 0,
    blocksChecked: 0,
    failedRounds: 0,
  };
  readonly #model: CrashModel;
  readonly #rand: () => number;

  private constructor(engine: Engine, opts: TortureOptions) {
    this.engine = engine;
    this.opts = opts;
    this.#model = new CrashModel(opts.seed, opts.volumes);
    this.#rand = seededRandom(opts.seed);
  }

  /**
   * Starts the engine on its (empty) pool and creates the volumes. The engine must not be
   * running yet; its pool must hold no volumes (the model starts from all zeros).
   */
  static async start(engine: Engine, opts: TortureOptions): Promise<CrashTorture> {
    await engine.start();
    const existing = await engine.listVolumes();
    if (existing.length > 0) {
      throw new Error(`the pool in ${engine.dir} already holds volumes (${existing.map((v) => v.name).join(', ')}): torture needs an empty pool`);
    }
    for (const v of opts.volumes) await engine.createVolume(v.name, v.size);
    return new CrashTorture(engine, opts);
  }

  /** One round; returns what it found. Throws only when the harness cannot go on. */
  async round(): Promise<RoundResult> {
    const round = ++this.totals.rounds;
    const problems: string[] = [];
    let phase = 'writing';
    try {
      this.#model.beginRound();
      const writers = this.#model.runWriters(this.engine.nbdSocket, this.opts.workload, this.#rand);
      const killAfterMs = randomInt(this.#rand, this.opts.killAfterMs.min, this.opts.killAfterMs.max);
      await sleep(killAfterMs);
      const killed = await this.engine.kill9();
      this.totals.kills++;
      if (killed.signal !== 'SIGKILL') problems.push(`the engine died on its own before kill -9 (code ${killed.code}, signal ${killed.signal})`);
      const stats = await writers.done;
      this.#addStats(stats);
      for (const e of stats.unexpectedErrors) problems.push(`NBD error during the workload: ${e}`);

      let recoveryKillAfterMs: number | undefined;
      if (this.#rand() < this.opts.recoveryCrashProbability) {
        phase = 'crashing it during recovery';
        this.engine.spawn();
        recoveryKillAfterMs = randomInt(this.#rand, 0, 600);
        await sleep(recoveryKillAfterMs);
        const again = await this.engine.kill9();
        this.totals.kills++;
        this.totals.recoveryKills++;
        if (again.signal !== 'SIGKILL') problems.push(`the engine exited by itself during recovery (code ${again.code}, signal ${again.signal})`);
      }

      phase = 'restarting';
      await this.engine.start();
      phase = 'verifying';
      const verified = await this.#verify(problems);
      this.totals.bytesVerified += verified;
      this.totals.blocksChecked += verified / BLOCK_BYTES;
      if (problems.length > 0) this.totals.failedRounds++;
      return { round, killAfterMs, recoveryKillAfterMs, stats, bytesVerified: verified, blocksChecked: verified / BLOCK_BYTES, problems };
    } catch (err) {
      if (err instanceof Error) err.message = `seed ${this.opts.seed}, round ${round}, while ${phase}: ${err.message}`;
      throw err;
    }
  }

  /** Stops the engine cleanly (SIGTERM); returns how it exited. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.engine.stop();
  }

  #addStats(s: RoundStats): void {
    this.totals.writesSent += s.writesSent;
    this.totals.writesAcked += s.writesAcked;
    this.totals.trimsSent += s.trimsSent;
    this.totals.flushesCompleted += s.flushesCompleted;
    this.totals.durableOps += s.durableOps;
  }

  /** Reads and checks every volume; appends problems; returns the bytes read and checked. */
  async #verify(problems: string[]): Promise<number> {
    const expected = this.opts.volumes.map((v) => ({ name: v.name, sizeBytes: v.sizeBytes })).sort((a, b) => a.name.localeCompare(b.name));
    const listed = await this.engine.listVolumes();
    if (JSON.stringify(listed) !== JSON.stringify(expected)) {
      problems.push(`volumes after restart: ${JSON.stringify(listed)}, expected ${JSON.stringify(expected)}`);
    }
    let verified = 0;
    for (const spec of this.opts.volumes) {
      const { content, failures } = await readVolume(this.engine.nbdSocket, spec.name, spec.sizeBytes);
      if (failures.length > 0) {
        problems.push(...failures);
        continue;
      }
      const found = this.#model.checkVolume(spec.index, content);
      if (found.length > 0) {
        // Tell a read-path fault from damage on disk: does a second read agree with the first?
        const again = await readVolume(this.engine.nbdSocket, spec.name, spec.sizeBytes);
        const same = again.failures.length === 0 && again.content.equals(content);
        found.push(`${spec.name}: a second read of the volume ${same ? 'returns the same bytes' : 'returns DIFFERENT bytes'}`);
      }
      problems.push(...found);
      verified += spec.sizeBytes;
    }
    return verified;
  }
}

/**
 * Reads a whole volume in 1 MiB requests. A request that fails is reported (by range and errno)
 * instead of thrown, so that one failure shows the full extent of the damage.
 */
export async function readVolume(socketPath: string, name: string, sizeBytes: number): Promise<{ content: Buffer; failures: string[] }> {
  const client = await NbdClient.connect(socketPath, name);
  const content = Buffer.alloc(sizeBytes);
  const failures: string[] = [];
  try {
    if (client.info.sizeBytes !== sizeBytes) failures.push(`${name}: export size ${client.info.sizeBytes}, expected ${sizeBytes}`);
    const reads: Promise<void>[] = [];
    for (let at = 0; at < sizeBytes; at += MiB) {
      const n = Math.min(MiB, sizeBytes - at);
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

/** One line per round, for people watching a run. */
export function describeRound(r: RoundResult): string {
  const recovery = r.recoveryKillAfterMs === undefined ? '' : `, killed again ${r.recoveryKillAfterMs} ms into recovery`;
  const s = r.stats;
  return (
    `round ${r.round}: kill after ${r.killAfterMs} ms${recovery}; writes sent ${s.writesSent}, acked ${s.writesAcked}, ` +
    `trims ${s.trimsSent}, flushes ${s.flushesCompleted}, durable block-ops ${s.durableOps}; ` +
    `verified ${(r.bytesVerified / MiB).toFixed(0)} MiB: ${r.problems.length === 0 ? 'ok' : `${r.problems.length} PROBLEMS`}`
  );
}
