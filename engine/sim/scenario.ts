/**
 * Scenarios: what a simulation run does, generated from a seed. A scenario is plain data, a
 * pool configuration and a list of steps; steps name their targets by a raw random number
 * (`target`) that the runner resolves against the exports that exist when the step runs, so
 * the list never depends on the engine's behaviour and prints as it is.
 */
import type { FaultRule } from '../storage/sim-disk-faults.ts';
import { SimRandom } from '../storage/sim-disk-prng.ts';

/** A byte range, resolved against the target's size when the step runs. */
export interface RangeSpec {
  at: number;
  length: number;
  /** Whole 4 KiB blocks, or any bytes. */
  aligned: boolean;
}

export type Step =
  | { kind: 'write'; target: number; range: RangeSpec; fua: boolean; dataId: number }
  | { kind: 'trim'; target: number; range: RangeSpec; fua: boolean }
  | { kind: 'zero'; target: number; range: RangeSpec; fua: boolean; mayUnmap: boolean }
  | { kind: 'read'; target: number; range: RangeSpec }
  | { kind: 'flush' }
  | { kind: 'create'; blocks: number }
  | { kind: 'snapshot'; target: number }
  | { kind: 'clone'; target: number; extraBlocks: number }
  | { kind: 'delete'; target: number }
  | { kind: 'resize'; target: number; extraBlocks: number }
  /** pool.clean(); in the background it overlaps the steps that follow. */
  | { kind: 'clean'; background: boolean }
  /** Clean shutdown (close) and open. */
  | { kind: 'restart' }
  /** The engine process dies (kill -9) and restarts: the page cache survives. */
  | { kind: 'processCrash' }
  | { kind: 'powerCut'; tear: boolean }
  /** The power fails after `afterOps` more disk operations while `step` runs. */
  | { kind: 'crashDuring'; afterOps: number; tear: boolean; step: Step }
  /** Arms a fault rule on the disk for the steps that follow (until the next restart). */
  | { kind: 'fault'; rule: FaultRule }
  /** Restarts with a fault armed during recovery, then again without it. */
  | { kind: 'recoveryFault'; rule: FaultRule }
  /** Damages one block of a file on the medium. */
  | { kind: 'corrupt'; file: 'segment' | 'checkpoint' | 'meta'; target: number; block: number };

export interface PoolConfig {
  segmentBytes: number;
  checkpointIntervalBytes: number;
  /** The engine's block cache; small, so that evictions happen (and pools open fast). */
  cacheBytes: number;
  capacityBytes?: number;
}

export interface Scenario {
  seed: number;
  pool: PoolConfig;
  /** Block counts of the volumes created (and flushed) before the first step. */
  volumes: number[];
  steps: Step[];
}

export interface ScenarioOptions {
  /** Include corruption of log segments and the checkpoint. */
  corruption: boolean;
  /** Also corrupt pool.json (it has no checksum today). */
  corruptMetadata: boolean;
  /** Failed fdatasyncs sometimes drop the dirty data as Linux does. */
  dropDirtyOnSyncFailure: boolean;
  /** Upper bound of steps per scenario. */
  maxSteps: number;
}

export const DEFAULT_SCENARIO_OPTIONS: ScenarioOptions = {
  corruption: true,
  corruptMetadata: false,
  dropDirtyOnSyncFailure: false,
  maxSteps: 40,
};

const BLOCK = 4096;
// The smallest segment the writer accepts is 69 blocks; small ones roll often, so cleaning,
// segment reuse and continuation in another segment all happen within a few dozen writes.
const SEGMENT_BLOCKS = [69, 76, 96, 128];
const SEGMENT = /^segment-\d+\.log$/;

export function generateScenario(seed: number, options: ScenarioOptions = DEFAULT_SCENARIO_OPTIONS): Scenario {
  const r = new SimRandom(seed);
  const segmentBytes = r.pick(SEGMENT_BLOCKS) * BLOCK;
  const pool: PoolConfig = {
    segmentBytes,
    checkpointIntervalBytes: r.pick([48, 96, 160, 1024]) * 1024,
    cacheBytes: r.pick([0, 8, 64]) * BLOCK,
  };
  // A capacity makes client writes meet NO_SPACE and the cleaner run on its own.
  if (r.chance(0.1)) pool.capacityBytes = r.between(6, 10) * segmentBytes;
  const volumes = Array.from({ length: r.between(1, 3) }, () => r.between(2, 16));
  const count = r.between(Math.min(8, options.maxSteps), options.maxSteps);
  const steps: Step[] = [];
  for (let i = 0; i < count; i++) steps.push(generateStep(r, options, true));
  return { seed, pool, volumes, steps };
}

function range(r: SimRandom): RangeSpec {
  const aligned = r.chance(0.5);
  // Mostly short ranges, sometimes long ones that span many blocks.
  const length = r.chance(0.8) ? r.between(1, aligned ? 3 : 3 * BLOCK) : r.between(1, aligned ? 16 : 16 * BLOCK);
  return { at: r.nextUint32(), length, aligned };
}

function generateStep(r: SimRandom, o: ScenarioOptions, topLevel: boolean): Step {
  const kind = r.weighted({
    write: 30,
    trim: 4,
    zero: 4,
    read: 3,
    flush: 7,
    create: 2,
    snapshot: 4,
    clone: 4,
    delete: 3,
    resize: 2,
    clean: 4,
    restart: 3,
    processCrash: topLevel ? 1.5 : 0,
    powerCut: topLevel ? 4 : 0,
    crashDuring: topLevel ? 3 : 0,
    fault: topLevel ? 3.5 : 0,
    recoveryFault: topLevel ? 0.7 : 0,
    corrupt: topLevel && o.corruption ? 1.5 : 0,
  });
  const target = r.nextUint32();
  switch (kind) {
    case 'write':
      return { kind, target, range: range(r), fua: r.chance(0.15), dataId: r.nextUint32() };
    case 'trim':
      return { kind, target, range: range(r), fua: r.chance(0.1) };
    case 'zero':
      return { kind, target, range: range(r), fua: r.chance(0.1), mayUnmap: r.chance(0.5) };
    case 'read':
      return { kind, target, range: range(r) };
    case 'flush':
    case 'restart':
    case 'processCrash':
      return { kind };
    case 'create':
      return { kind, blocks: r.between(1, 16) };
    case 'snapshot':
    case 'delete':
      return { kind, target };
    case 'clone':
      return { kind, target, extraBlocks: r.chance(0.7) ? 0 : r.between(1, 4) };
    case 'resize':
      return { kind, target, extraBlocks: r.between(1, 4) };
    case 'clean':
      return { kind, background: r.chance(0.4) };
    case 'powerCut':
      return { kind, tear: r.chance(0.6) };
    case 'crashDuring': {
      const afterOps = r.chance(0.5) ? r.int(4) : r.int(40);
      return { kind, afterOps, tear: r.chance(0.6), step: generateStep(r, o, false) };
    }
    case 'fault':
      return { kind, rule: faultRule(r, o) };
    case 'recoveryFault':
      return { kind, rule: { ops: r.chance(0.5) ? ['fdatasync', 'truncate'] : ['read', 'open', 'syncDir', 'remove'], nth: r.between(1, 3), code: 'IO_ERROR' } };
    case 'corrupt': {
      const file = o.corruptMetadata && r.chance(0.15) ? 'meta' : r.chance(0.15) ? 'checkpoint' : 'segment';
      return { kind, file, target, block: r.nextUint32() };
    }
  }
}

function faultRule(r: SimRandom, o: ScenarioOptions): FaultRule {
  const which = r.weighted({ logWrite: 4, logSync: 4, logNoSpace: 2, newSegment: 1, metadata: 2, checkpoint: 1, random: 2 });
  switch (which) {
    case 'logWrite':
      return { ops: ['pwrite'], name: SEGMENT, nth: r.between(1, 4), code: 'IO_ERROR' };
    case 'logSync':
      return { ops: ['fdatasync'], name: SEGMENT, nth: r.between(1, 3), code: 'IO_ERROR', dropsDirtyData: o.dropDirtyOnSyncFailure && r.chance(0.5) };
    case 'logNoSpace':
      return { ops: ['pwrite'], name: SEGMENT, nth: r.between(1, 4), code: 'NO_SPACE' };
    case 'newSegment':
      return { ops: ['truncate'], name: SEGMENT, nth: r.between(1, 2), code: r.chance(0.5) ? 'NO_SPACE' : 'IO_ERROR' };
    case 'metadata':
      return { ops: r.pick([['pwrite'], ['fdatasync'], ['rename'], ['syncDir']] as const), name: /^pool\.json|^\.$/, nth: r.between(1, 2), code: r.chance(0.3) ? 'NO_SPACE' : 'IO_ERROR' };
    case 'checkpoint':
      return { ops: ['pwrite', 'fdatasync', 'rename'], name: /^index\.ckpt/, nth: r.between(1, 2), code: 'IO_ERROR' };
    case 'random':
      return { ops: ['pwrite', 'fdatasync', 'truncate', 'syncDir', 'rename'], probability: r.pick([0.02, 0.05, 0.1]), times: r.between(1, 3), code: r.chance(0.2) ? 'NO_SPACE' : 'IO_ERROR' };
  }
}

/** One line per step, for logs and reproductions. */
export function describeStep(step: Step): string {
  const rng = (s: RangeSpec) => `${s.aligned ? 'blocks' : 'bytes'}(${s.at % 100000},${s.length})`;
  switch (step.kind) {
    case 'write':
      return `write t${step.target % 1000} ${rng(step.range)}${step.fua ? ' fua' : ''}`;
    case 'trim':
      return `trim t${step.target % 1000} ${rng(step.range)}${step.fua ? ' fua' : ''}`;
    case 'zero':
      return `zero t${step.target % 1000} ${rng(step.range)}${step.mayUnmap ? ' may-unmap' : ''}${step.fua ? ' fua' : ''}`;
    case 'crashDuring':
      return `power cut after ${step.afterOps} disk ops${step.tear ? ' (tearing)' : ''} during: ${describeStep(step.step)}`;
    case 'powerCut':
      return `power cut${step.tear ? ' (tearing)' : ''}`;
    default:
      return step.kind;
  }
}
