/**
 * Model-based test of snapshots, clones and deletion with dependents: random sequences of
 * writes, trims, zeroes, snapshots, clones (of volumes and of snapshots), deletes, flushes,
 * restarts and power cuts, each export compared byte for byte with a plain buffer.
 *
 * Snapshot and clone flush the log, so they are durable points like FLUSH. Create and delete
 * are durable as metadata whatever the data prefix, so after a power cut they apply to every
 * candidate state (see pool.fuzz.test.ts for the prefix rule).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { silentLogger } from './logger.ts';
import { MAX_CHAIN_DEPTH, Pool } from './pool.ts';
import { MemoryStorage } from './storage/memory-storage.ts';

const SIZE = 64 * 1024;
// Tiny segments (the smallest the writer accepts, plus a little) so the cleaner has work.
const poolOpts = { logger: silentLogger, segmentBytes: 69 * 4096, checkpointIntervalBytes: 160 * 1024 };

type Op =
  | { kind: 'write'; pick: number; offset: number; length: number; seed: number }
  | { kind: 'trim' | 'zero'; pick: number; offset: number; length: number }
  | { kind: 'snapshot' | 'clone' | 'delete'; pick: number }
  | { kind: 'flush' | 'restart' | 'powerCut' | 'clean' };

const pick = fc.nat({ max: 1000 });
const span = fc.tuple(fc.nat({ max: SIZE - 1 }), fc.integer({ min: 1, max: 12_000 })).map(([o, l]) => ({ offset: o, length: Math.min(l, SIZE - o) }));
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ pick, s: span, seed: fc.integer({ min: 1, max: 250 }) }).map(({ pick, s, seed }) => ({ kind: 'write' as const, pick, ...s, seed })) },
  { weight: 2, arbitrary: fc.record({ pick, s: span, z: fc.boolean() }).map(({ pick, s, z }) => ({ kind: z ? ('zero' as const) : ('trim' as const), pick, ...s })) },
  { weight: 3, arbitrary: fc.record({ pick, k: fc.constantFrom('snapshot' as const, 'clone' as const, 'clone' as const, 'delete' as const) }).map(({ pick, k }) => ({ kind: k, pick })) },
  { weight: 3, arbitrary: fc.constantFrom({ kind: 'flush' as const }, { kind: 'restart' as const }, { kind: 'powerCut' as const }, { kind: 'clean' as const }) },
);

// Dedup: block-aligned writes of a few patterns, so many blocks repeat across writes, LBAs and
// volumes (every block of one pattern write is identical: 4096 × 7 ≡ 0 mod 256).
const alignedSpan = fc.tuple(fc.nat({ max: SIZE / 4096 - 1 }), fc.integer({ min: 1, max: 4 })).map(([b, n]) => ({ offset: b * 4096, length: Math.min(n, SIZE / 4096 - b) * 4096 }));
const dedupOpArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ pick, s: alignedSpan, seed: fc.integer({ min: 1, max: 3 }) }).map(({ pick, s, seed }) => ({ kind: 'write' as const, pick, ...s, seed })) },
  { weight: 10, arbitrary: opArb },
);

type State = Map<string, { kind: 'volume' | 'snapshot'; data: Buffer }>;
const copy = (s: State): State => new Map([...s].map(([k, v]) => [k, { kind: v.kind, data: Buffer.from(v.data) }]));

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (seed + i * 7) & 0xff || 1;
  return b;
}

async function readAll(pool: Pool, names: string[]): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const name of names) {
    const dev = pool.openExport(name);
    const buf = Buffer.alloc(dev.sizeBytes);
    await dev.read(0, buf);
    dev.close();
    out.set(name, buf);
  }
  return out;
}

function same(state: State, found: Map<string, Buffer>): boolean {
  return [...state].every(([name, e]) => found.get(name)?.equals(e.data) === true);
}

async function run(ops: Op[], dedup = false): Promise<void> {
  let storage = new MemoryStorage();
  let pool = await Pool.openWithStorage(storage, poolOpts);
  await pool.createVolume('v0', SIZE, { dedup });
  let model: State = new Map([['v0', { kind: 'volume', data: Buffer.alloc(SIZE) }]]);
  let candidates: State[] = [copy(model)];
  let counter = 0;
  const names = () => [...model.keys()].sort();
  const volumes = () => names().filter((n) => model.get(n)!.kind === 'volume');
  for (const op of ops) {
    if (op.kind === 'restart' || op.kind === 'powerCut') {
      if (op.kind === 'restart') await pool.close();
      storage = op.kind === 'powerCut' ? storage.powerCut() : storage;
      pool = await Pool.openWithStorage(storage, poolOpts);
      expect(pool.listExports()).toEqual(names());
      const found = await readAll(pool, names());
      const match = op.kind === 'restart' ? model : candidates.find((c) => same(c, found));
      expect(match && same(match, found), 'exports after restart are not a prefix of the acknowledged operations').toBe(true);
      model = copy(match!);
      candidates = [copy(model)];
      continue;
    }
    if (op.kind === 'clean') {
      // Moving blocks changes no content, and promises no durability of its own.
      await pool.clean();
      continue;
    }
    if (op.kind === 'flush') {
      const dev = pool.openExport(names()[0]!);
      await dev.flush();
      dev.close();
      candidates = [copy(model)];
      continue;
    }
    if (op.kind === 'snapshot' || op.kind === 'clone' || op.kind === 'delete') {
      const pool_ = op.kind === 'snapshot' ? volumes() : names();
      if (pool_.length === 0 || (op.kind === 'delete' && pool_.length === 1)) continue;
      const source = pool_[op.pick % pool_.length]!;
      if (op.kind === 'delete') {
        if (model.get(source)!.kind === 'volume') await pool.deleteVolume(source);
        else await pool.deleteSnapshot(source);
        model.delete(source);
        for (const c of candidates) c.delete(source);
        continue;
      }
      const name = `${op.kind === 'snapshot' ? 's' : 'c'}${++counter}`;
      if (op.kind === 'snapshot') await pool.createSnapshot(source, name);
      else await pool.cloneVolume(source, name);
      model.set(name, { kind: op.kind === 'snapshot' ? 'snapshot' : 'volume', data: Buffer.from(model.get(source)!.data) });
      candidates = [copy(model)];
      continue;
    }
    if (op.kind !== 'write' && op.kind !== 'trim' && op.kind !== 'zero') continue;
    const vols = volumes();
    if (vols.length === 0) continue;
    const target = vols[op.pick % vols.length]!;
    const dev = pool.openExport(target);
    const data = model.get(target)!.data;
    if (op.kind === 'write') {
      await dev.write(op.offset, pattern(op.length, op.seed), false);
      pattern(op.length, op.seed).copy(data, op.offset);
    } else if (op.kind === 'zero') {
      await dev.writeZeroes(op.offset, op.length, { fua: false, mayUnmap: true });
      data.fill(0, op.offset, op.offset + op.length);
    } else {
      await dev.trim(op.offset, op.length, false);
      const first = Math.ceil(op.offset / 4096) * 4096;
      const end = Math.floor((op.offset + op.length) / 4096) * 4096;
      if (end > first) data.fill(0, first, end);
    }
    dev.close();
    candidates.push(copy(model));
  }
  expect(same(model, await readAll(pool, names()))).toBe(true);
  await pool.idle();
  await pool.close();
  pool = await Pool.openWithStorage(storage, poolOpts);
  expect(same(model, await readAll(pool, names()))).toBe(true);
  await pool.close();
}

describe('snapshots and clones against a model', () => {
  it('every export matches the model through writes, clones, deletes and crashes', async () => {
    await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 45 }), (ops) => run(ops)), { numRuns: 120 });
  });

  it('with inline dedup, shared blocks stay right through overwrites, cleaning and crashes', async () => {
    await fc.assert(fc.asyncProperty(fc.array(dedupOpArb, { minLength: 1, maxLength: 45 }), (ops) => run(ops, true)), { numRuns: 120 });
  });

  it('a chain of clones deeper than the bound is flattened and reads the same', async () => {
    const pool = await Pool.openWithStorage(new MemoryStorage(), poolOpts);
    await pool.createVolume('c0', SIZE);
    const expected = Buffer.alloc(SIZE);
    for (let i = 1; i <= MAX_CHAIN_DEPTH * 3; i++) {
      const dev = pool.openExport(`c${i - 1}`);
      await dev.write((i * 4096) % SIZE, pattern(4096, i), false);
      pattern(4096, i).copy(expected, (i * 4096) % SIZE);
      dev.close();
      await pool.cloneVolume(`c${i - 1}`, `c${i}`);
      await pool.idle();
    }
    const last = `c${MAX_CHAIN_DEPTH * 3}`;
    expect((await readAll(pool, [last])).get(last)).toEqual(expected);
    await pool.close();
  });
});
