/**
 * Prints the memory of the block index (engine/index/block-map.ts) per mapped block for the
 * write patterns DESIGN P8 talks about, twice: as BlockMap.memoryBytes() estimates it, and as
 * V8 reports it (heap used plus ArrayBuffer bytes, after a full GC, minus the same before
 * building the map). Also prints the build time per block and the get() time, for orientation
 * only: benchmarks are not tests.
 *
 *   node hack/bench/index-memory.ts
 *
 * Each pattern runs in its own child process (started with --expose-gc), so garbage from one
 * pattern cannot blur the heap figure of the next.
 */

import { execFileSync } from 'node:child_process';
import { BlockMap, CHUNK_BLOCKS } from '../../engine/index/block-map.ts';

interface Pattern {
  name: string;
  /** The LBAs to write, in write order (not timed); null for patterns that need none. */
  prepare(): Float64Array | null;
  build(map: BlockMap, lbas: Float64Array | null): void;
}

const GIB_BLOCKS = 2 ** 18; // 4 KiB blocks per GiB
const TIB_BLOCKS = 2 ** 28;

/** mulberry32: a small deterministic PRNG, so every run measures the same maps. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** count distinct LBAs below span, in random order (partial Fisher-Yates). */
function randomDistinct(count: number, span: number, seed: number): Float64Array {
  const all = new Float64Array(span);
  for (let i = 0; i < span; i++) all[i] = i;
  const random = prng(seed);
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(random() * (span - i));
    const t = all[i]!;
    all[i] = all[j]!;
    all[j] = t;
  }
  return all.subarray(0, count);
}

function shuffle(values: Float64Array, seed: number): void {
  const random = prng(seed);
  for (let i = values.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = values[i]!;
    values[i] = values[j]!;
    values[j] = t;
  }
}

/** Odd values 1, 3, 5, ... in write order: no two blocks are ever physically contiguous. */
function setScattered(map: BlockMap, lbas: Float64Array | null): void {
  if (lbas === null) throw new Error('pattern needs LBAs');
  for (let i = 0; i < lbas.length; i++) map.set(lbas[i]!, 2 * i + 1);
}

const patterns: Pattern[] = [
  {
    name: 'random: 1M blocks in 16 GiB, non-contiguous',
    prepare: () => randomDistinct(1_000_000, 16 * GIB_BLOCKS, 1),
    build: setScattered,
  },
  {
    name: 'sequential: 1M blocks, setRun batches of 256',
    prepare: () => null,
    build: (map) => {
      for (let lba = 0; lba < 1_000_000; lba += 256) map.setRun(lba, Math.min(256, 1_000_000 - lba), 1 + lba);
    },
  },
  {
    name: 'sequential LBAs, non-contiguous values (dense)',
    prepare: () => null,
    build: (map) => {
      for (let lba = 0; lba < 1_000_000; lba++) map.set(lba, 2 * lba + 1);
    },
  },
  {
    name: '1% of 1 TiB, scattered, random order',
    prepare: () => {
      const random = prng(2);
      const lbas: number[] = [];
      for (let lba = Math.floor(random() * 199); lba < TIB_BLOCKS; lba += 1 + Math.floor(random() * 199)) lbas.push(lba);
      const order = Float64Array.from(lbas);
      shuffle(order, 3);
      return order;
    },
    build: setScattered,
  },
  {
    name: 'one block per 4096-block chunk over 1 TiB',
    prepare: () => {
      const random = prng(4);
      const lbas = new Float64Array(TIB_BLOCKS / CHUNK_BLOCKS);
      for (let c = 0; c < lbas.length; c++) lbas[c] = c * CHUNK_BLOCKS + Math.floor(random() * CHUNK_BLOCKS);
      shuffle(lbas, 5);
      return lbas;
    },
    build: setScattered,
  },
  {
    name: 'zero-filled 1 TiB (fill ZERO_MARK)',
    prepare: () => null,
    build: (map) => map.fill(0, TIB_BLOCKS, 0xffffffff),
  },
];

const gc = (globalThis as { gc?: () => void }).gc;

function heapBytes(): number {
  gc?.();
  gc?.();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

function measure(pattern: Pattern): string {
  const lbas = pattern.prepare();
  let map: BlockMap | undefined = new BlockMap();
  const before = heapBytes();
  const start = process.hrtime.bigint();
  pattern.build(map, lbas);
  const buildNs = Number(process.hrtime.bigint() - start);
  const heap = heapBytes() - before;
  const mapped = map.mappedCount;
  const getNs = timeGets(map);
  const estimate = map.memoryBytes() / mapped;
  const measured = gc === undefined ? 'n/a' : (heap / mapped).toFixed(2);
  const { sparseLeaves, denseLeaves, runLeaves } = map.stats();
  map = undefined;
  return [
    pattern.name.padEnd(48),
    String(mapped).padStart(11),
    estimate.toFixed(2).padStart(9),
    measured.padStart(9),
    (buildNs / mapped).toFixed(0).padStart(9),
    getNs.toFixed(0).padStart(7),
    `  ${sparseLeaves}/${denseLeaves}/${runLeaves}`,
  ].join(' ');
}

/** Average ns per get() over a fixed pseudo-random probe of the first 16 GiB. */
function timeGets(map: BlockMap): number {
  const probes = 1_000_000;
  const random = prng(9);
  const lbas = new Float64Array(probes);
  for (let i = 0; i < probes; i++) lbas[i] = Math.floor(random() * 16 * GIB_BLOCKS);
  let sum = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < probes; i++) sum += map.get(lbas[i]!);
  const ns = Number(process.hrtime.bigint() - start) / probes;
  return sum >= 0 ? ns : ns; // sum keeps the loop from being optimised away
}

const child = process.argv[2];
if (child === 'baseline') {
  console.log(`for scale: Map<number, number> get, 1M random keys in 16 GiB: ${baselineMapGetNs().toFixed(0)} ns`);
} else if (child !== undefined) {
  console.log(measure(patterns[Number(child)]!));
} else {
  console.log(
    `${'pattern'.padEnd(48)} ${'mapped'.padStart(11)} ${'est B/blk'.padStart(9)} ${'heap B/blk'.padStart(9)} ${'ns/block'.padStart(9)} ${'get ns'.padStart(7)}  sparse/dense/run`,
  );
  const runs = [...patterns.keys()].map(String).concat('baseline');
  for (const arg of runs) {
    const out = execFileSync(process.execPath, ['--expose-gc', import.meta.filename, arg], { encoding: 'utf8' });
    process.stdout.write(out);
  }
}

/** The same random-probe loop against a plain Map holding the first pattern's blocks. */
function baselineMapGetNs(): number {
  const lbas = randomDistinct(1_000_000, 16 * GIB_BLOCKS, 1);
  const map = new Map<number, number>();
  for (let i = 0; i < lbas.length; i++) map.set(lbas[i]!, 2 * i + 1);
  const random = prng(9);
  const probes = new Float64Array(1_000_000);
  for (let i = 0; i < probes.length; i++) probes[i] = Math.floor(random() * 16 * GIB_BLOCKS);
  let sum = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < probes.length; i++) sum += map.get(probes[i]!) ?? 0;
  const ns = Number(process.hrtime.bigint() - start) / probes.length;
  return sum >= 0 ? ns : ns;
}
