/**
 * Model test for BlockMap: random command sequences run against both the map and a plain
 * Map<lba, value>, comparing every read and checking the map's invariants (verify()) after every
 * mutation. LBAs cluster in two windows (the bottom of the space and just under 2^40), each a
 * few 65536-block groups wide, so writes collide, leaves split, merge, turn dense and back, and
 * runs cross chunk and group boundaries. fast-check prints the seed and the shrunk command list
 * on failure; replay with `fc.assert(..., { seed, path })`. BLOCK_MAP_FUZZ_SCALE=20 runs twenty
 * times as many sequences (for soak runs; the default keeps the file near two seconds).
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BlockMap, CHUNK_BLOCKS, LBA_LIMIT, SPARSE_MAX_ENTRIES, UNMAPPED, ZERO_MARK } from './block-map.ts';

const WINDOW_BLOCKS = 3 * 16 * CHUNK_BLOCKS;
const MAX_VALUE = ZERO_MARK - 1;
const SCALE = Number(process.env['BLOCK_MAP_FUZZ_SCALE'] ?? '1');

type Command =
  | { op: 'set'; lba: number; value: number }
  | { op: 'topRun'; lba: number; count: number }
  | { op: 'wholeChunks'; chunk: number; pieces: { step: 0 | 1; first: number }[] }
  | { op: 'setRun'; lba: number; count: number; first: number }
  | { op: 'fill'; lba: number; count: number; value: number }
  | { op: 'scatter'; lba: number; count: number; stride: number; seed: number; trim: boolean }
  | { op: 'get'; lba: number }
  | { op: 'run'; lba: number; max: number }
  | { op: 'next'; from: number }
  | { op: 'forEach'; from: number; count: number }
  | { op: 'roundtrip' };

const lbaArb = fc.oneof(
  fc.integer({ min: 0, max: WINDOW_BLOCKS }),
  fc.integer({ min: LBA_LIMIT - WINDOW_BLOCKS, max: LBA_LIMIT - 1 }),
  // On and next to chunk and group boundaries, where whole-chunk paths and off-by-ones live.
  fc.tuple(fc.integer({ min: 0, max: 47 }), fc.integer({ min: -2, max: 2 })).map(([c, d]) => Math.max(0, c * CHUNK_BLOCKS + d)),
  fc.integer({ min: 0, max: 47 }).map((c) => c * CHUNK_BLOCKS),
);
// Small values collide on purpose: a run leaf of 5, 5, 5 next to one of 5, 6, 7 must stay apart.
const smallValueArb = fc.integer({ min: 1, max: 8 });
const valueArb = fc.oneof(
  fc.constant(UNMAPPED),
  fc.constant(ZERO_MARK),
  fc.constant(MAX_VALUE),
  smallValueArb,
  fc.integer({ min: 1, max: MAX_VALUE }),
);
const firstArb = fc.oneof(smallValueArb, fc.integer({ min: 1, max: MAX_VALUE }));
const countArb = fc.oneof(
  fc.integer({ min: 0, max: 40 }),
  fc.integer({ min: 0, max: 9000 }),
  fc.constantFrom(CHUNK_BLOCKS - 1, CHUNK_BLOCKS, CHUNK_BLOCKS + 1, 2 * CHUNK_BLOCKS - 1, 2 * CHUNK_BLOCKS, 3 * CHUNK_BLOCKS),
);

/** Consecutive whole-chunk runs with colliding values: the serializer coalesces run leaves. */
const wholeChunksArb = (chunks: fc.Arbitrary<number>): fc.Arbitrary<Command> =>
  fc.record({
    op: fc.constant('wholeChunks' as const),
    chunk: chunks,
    pieces: fc.array(fc.record({ step: fc.constantFrom(0 as const, 1 as const), first: smallValueArb }), { minLength: 1, maxLength: 4 }),
  });

const commandArb: fc.Arbitrary<Command> = fc.oneof(
  wholeChunksArb(fc.integer({ min: 0, max: 47 })),
  fc.record({ op: fc.constant('set' as const), lba: lbaArb, value: valueArb }),
  fc.record({ op: fc.constant('setRun' as const), lba: lbaArb, count: countArb, first: firstArb }),
  fc.record({ op: fc.constant('topRun' as const), lba: lbaArb, count: countArb }),
  fc.record({ op: fc.constant('fill' as const), lba: lbaArb, count: countArb, value: valueArb }),
  // A window-wide trim: the big-range path that must skip empty chunks.
  fc.record({ op: fc.constant('fill' as const), lba: lbaArb, count: fc.constant(WINDOW_BLOCKS), value: fc.constant(UNMAPPED) }),
  fc.record({
    op: fc.constant('scatter' as const),
    lba: lbaArb,
    count: fc.integer({ min: 1, max: SPARSE_MAX_ENTRIES + 400 }),
    stride: fc.integer({ min: 1, max: 40 }),
    seed: fc.integer({ min: 0, max: 0x7fffffff }),
    trim: fc.boolean(),
  }),
  fc.record({ op: fc.constant('get' as const), lba: lbaArb }),
  fc.record({ op: fc.constant('run' as const), lba: lbaArb, max: fc.oneof(fc.integer({ min: 1, max: 20000 }), fc.constant(LBA_LIMIT)) }),
  fc.record({ op: fc.constant('next' as const), from: lbaArb }),
  fc.record({ op: fc.constant('forEach' as const), from: lbaArb, count: countArb }),
  fc.constant({ op: 'roundtrip' as const }),
);

/** Both sides of the comparison. Mutations apply to both; reads compare. */
class Harness {
  map = new BlockMap();
  readonly model = new Map<number, number>();

  apply(cmd: Command): void {
    switch (cmd.op) {
      case 'set':
        this.map.set(cmd.lba, cmd.value);
        this.store(cmd.lba, cmd.value);
        return this.check();
      case 'setRun': {
        const count = Math.min(cmd.count, LBA_LIMIT - cmd.lba);
        const first = Math.min(cmd.first, ZERO_MARK - count);
        this.map.setRun(cmd.lba, count, first);
        for (let i = 0; i < count; i++) this.store(cmd.lba + i, first + i);
        return this.check();
      }
      case 'fill': {
        const count = Math.min(cmd.count, LBA_LIMIT - cmd.lba);
        this.map.fill(cmd.lba, count, cmd.value);
        for (let i = 0; i < count; i++) this.store(cmd.lba + i, cmd.value);
        return this.check();
      }
      case 'topRun':
        return this.topRun(cmd.lba, cmd.count);
      case 'wholeChunks':
        cmd.pieces.forEach(({ step, first }, i) => {
          const lba = (cmd.chunk + i) * CHUNK_BLOCKS;
          if (step === 1) this.apply({ op: 'setRun', lba, count: CHUNK_BLOCKS, first });
          else this.apply({ op: 'fill', lba, count: CHUNK_BLOCKS, value: first });
        });
        return;
      case 'scatter':
        return this.scatter(cmd.lba, cmd.count, cmd.stride, cmd.seed, cmd.trim);
      default:
        return this.read(cmd);
    }
  }

  /** A run ending at the largest reference, followed by a ZERO_MARK block: run() must stop between. */
  private topRun(lba: number, count: number): void {
    const n = Math.max(1, Math.min(count, LBA_LIMIT - lba - 1));
    if (n < 1 || lba + n >= LBA_LIMIT) return;
    this.apply({ op: 'setRun', lba, count: n, first: ZERO_MARK - n });
    this.apply({ op: 'set', lba: lba + n, value: ZERO_MARK });
  }

  private scatter(lba: number, count: number, stride: number, seed: number, trim: boolean): void {
    let x = seed | 1;
    for (let i = 0; i < count && lba + i * stride < LBA_LIMIT; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const value = trim ? UNMAPPED : 1 + (x % MAX_VALUE);
      this.map.set(lba + i * stride, value);
      this.store(lba + i * stride, value);
    }
    this.check();
  }

  private read(cmd: Command): void {
    switch (cmd.op) {
      case 'get':
        expect(this.map.get(cmd.lba)).toBe(this.value(cmd.lba));
        return;
      case 'run': {
        const length = this.map.run(cmd.lba, cmd.max);
        expect([length, this.map.runValue]).toEqual([this.modelRun(cmd.lba, cmd.max), this.value(cmd.lba)]);
        return;
      }
      case 'next':
        expect(this.map.nextMapped(cmd.from)).toBe(this.modelNext(cmd.from));
        return;
      case 'forEach':
        expectSame(collect(this.map, cmd.from, cmd.from + cmd.count), this.modelRange(cmd.from, cmd.from + cmd.count));
        return;
      case 'roundtrip': {
        const copy = BlockMap.deserialize(this.map.serialize());
        copy.verify();
        expect(copy.mappedCount).toBe(this.model.size);
        expectSame(collect(copy, 0, LBA_LIMIT), this.modelRange(0, LBA_LIMIT));
        this.map = copy; // keep going on the reloaded map: its leaf layout differs
        return;
      }
      default:
        throw new Error(`not a read: ${cmd.op}`);
    }
  }

  private store(lba: number, value: number): void {
    if (value === UNMAPPED) this.model.delete(lba);
    else this.model.set(lba, value);
  }

  private value(lba: number): number {
    return this.model.get(lba) ?? UNMAPPED;
  }

  private check(): void {
    this.map.verify();
    expect(this.map.mappedCount).toBe(this.model.size);
  }

  private modelNext(from: number): number {
    let best = -1;
    for (const lba of this.model.keys()) if (lba >= from && (best < 0 || lba < best)) best = lba;
    return best;
  }

  private modelRun(lba: number, max: number): number {
    const limit = Math.min(max, LBA_LIMIT - lba);
    const first = this.value(lba);
    if (first === UNMAPPED) {
      const next = this.modelNext(lba);
      return next < 0 ? limit : Math.min(limit, next - lba);
    }
    const step = first === ZERO_MARK ? 0 : 1;
    let n = 1;
    while (n < limit) {
      const expected = first + step * n;
      if (expected === ZERO_MARK && step === 1) break;
      if (this.value(lba + n) !== expected) break;
      n++;
    }
    return n;
  }

  /** The model's entries in [from, to) as a flat [lba, value, lba, value, ...] list in lba order. */
  private modelRange(from: number, to: number): number[] {
    const lbas: number[] = [];
    for (const lba of this.model.keys()) if (lba >= from && lba < to) lbas.push(lba);
    const sorted = Float64Array.from(lbas).sort();
    const flat: number[] = [];
    for (const lba of sorted) flat.push(lba, this.value(lba));
    return flat;
  }
}

function collect(map: BlockMap, from: number, to: number): number[] {
  const flat: number[] = [];
  map.forEach(from, to, (lba, value) => flat.push(lba, value));
  return flat;
}

/** Compares flat entry lists, reporting the first difference (toEqual is slow on 100k items). */
function expectSame(actual: number[], expected: number[]): void {
  const n = Math.min(actual.length, expected.length);
  let i = 0;
  while (i < n && actual[i] === expected[i]) i++;
  if (i < n || actual.length !== expected.length) {
    const at = i - (i % 2);
    expect({ at, actual: actual.slice(at, at + 4), length: actual.length }).toEqual({
      at,
      actual: expected.slice(at, at + 4),
      length: expected.length,
    });
  }
}

describe('BlockMap against a Map model', () => {
  it('agrees on every read after random command sequences', () => {
    fc.assert(
      fc.property(fc.array(commandArb, { minLength: 1, maxLength: 40 }), (commands) => {
        const harness = new Harness();
        for (const cmd of commands) harness.apply(cmd);
        harness.apply({ op: 'roundtrip' });
      }),
      { numRuns: 150 * SCALE },
    );
  });

  it('agrees on dense single-chunk churn (sparse <-> dense <-> run transitions)', () => {
    // Two chunks only: scatters at stride 1-2 push them past SPARSE_MAX_ENTRIES and trims pull
    // them back under DENSE_MIN_ENTRIES, so conversions happen in most runs; writes start on
    // chunk edges often, so whole-chunk run leaves meet partial writes.
    const edges = [5, 6, 7].flatMap((c) => [c * CHUNK_BLOCKS - 1, c * CHUNK_BLOCKS, c * CHUNK_BLOCKS + 1]);
    const local = fc.oneof(fc.integer({ min: 5 * CHUNK_BLOCKS - 8, max: 7 * CHUNK_BLOCKS + 8 }), fc.constantFrom(...edges));
    const churn: fc.Arbitrary<Command> = fc.oneof(
      wholeChunksArb(fc.integer({ min: 4, max: 7 })),
      fc.record({
        op: fc.constant('scatter' as const),
        lba: local,
        count: fc.integer({ min: 1, max: CHUNK_BLOCKS }),
        stride: fc.integer({ min: 1, max: 2 }),
        seed: fc.integer({ min: 0, max: 0x7fffffff }),
        trim: fc.boolean(),
      }),
      fc.record({ op: fc.constant('setRun' as const), lba: local, count: countArb, first: firstArb }),
      fc.record({ op: fc.constant('topRun' as const), lba: local, count: countArb }),
      fc.record({ op: fc.constant('fill' as const), lba: local, count: countArb, value: valueArb }),
      fc.record({ op: fc.constant('run' as const), lba: local, max: fc.integer({ min: 1, max: 3 * CHUNK_BLOCKS }) }),
      fc.record({ op: fc.constant('next' as const), from: local }),
      fc.constant({ op: 'roundtrip' as const }),
    );
    fc.assert(
      fc.property(fc.array(churn, { minLength: 1, maxLength: 30 }), (commands) => {
        const harness = new Harness();
        for (const cmd of commands) harness.apply(cmd);
        harness.apply({ op: 'roundtrip' });
      }),
      { numRuns: 100 * SCALE },
    );
  });
});
