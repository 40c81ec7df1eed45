/**
 * Model-based test of the whole engine on a simulated disk: random sequences of writes
 * (aligned and not), trims, write-zeroes, flushes, clean restarts and power cuts over several
 * volumes, checked byte for byte against plain buffers.
 *
 * Power-cut rule: operations here run one at a time, so the batches reach the disk in
 * operation order; after a cut the engine must show the model as it was after some prefix of
 * the operations, and that prefix must include everything before the last completed flush.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { silentLogger } from './logger.ts';
import { Pool } from './pool.ts';
import { MemoryStorage } from './storage/memory-storage.ts';

const VOLUMES = ['a', 'b', 'c'];
const VOLUME_BYTES = 96 * 1024;
const poolOpts = { logger: silentLogger, segmentBytes: 512 * 1024, checkpointIntervalBytes: 192 * 1024 };

type Op =
  | { kind: 'write'; vol: number; offset: number; length: number; seed: number; fua: boolean }
  | { kind: 'trim'; vol: number; offset: number; length: number }
  | { kind: 'zero'; vol: number; offset: number; length: number; mayUnmap: boolean }
  | { kind: 'flush' }
  | { kind: 'restart' }
  | { kind: 'powerCut' };

const range = fc
  .tuple(fc.integer({ min: 0, max: VOLUME_BYTES - 1 }), fc.integer({ min: 1, max: 20_000 }), fc.boolean())
  .map(([offset, length, aligned]) => {
    const o = aligned ? offset - (offset % 4096) : offset;
    const l = aligned ? Math.max(4096, length - (length % 4096)) : length;
    return { offset: o, length: Math.min(l, VOLUME_BYTES - o) };
  });
const vol = fc.integer({ min: 0, max: VOLUMES.length - 1 });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ vol, r: range, seed: fc.integer({ min: 1, max: 255 }), fua: fc.boolean() }).map(({ vol, r, seed, fua }) => ({ kind: 'write' as const, vol, ...r, seed, fua })) },
  { weight: 2, arbitrary: fc.record({ vol, r: range }).map(({ vol, r }) => ({ kind: 'trim' as const, vol, ...r })) },
  { weight: 2, arbitrary: fc.record({ vol, r: range, mayUnmap: fc.boolean() }).map(({ vol, r, mayUnmap }) => ({ kind: 'zero' as const, vol, ...r, mayUnmap })) },
  { weight: 3, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'restart' as const }) },
  { weight: 2, arbitrary: fc.constant({ kind: 'powerCut' as const }) },
);

function fillPattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (seed + i * 13) & 0xff || 1;
  return b;
}

/** Applies an operation to the model; trims touch whole blocks only, as the engine promises. */
function applyToModel(model: Buffer[], op: Op): void {
  if (op.kind === 'write') fillPattern(op.length, op.seed).copy(model[op.vol]!, op.offset);
  else if (op.kind === 'zero') model[op.vol]!.fill(0, op.offset, op.offset + op.length);
  else if (op.kind === 'trim') {
    const first = Math.ceil(op.offset / 4096) * 4096;
    const end = Math.floor((op.offset + op.length) / 4096) * 4096;
    if (end > first) model[op.vol]!.fill(0, first, end);
  }
}

async function readAll(pool: Pool): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (const name of VOLUMES) {
    const dev = pool.openExport(name);
    const buf = Buffer.alloc(VOLUME_BYTES);
    await dev.read(0, buf);
    dev.close();
    out.push(buf);
  }
  return out;
}

async function runScenario(ops: Op[]): Promise<void> {
  let storage = new MemoryStorage();
  let pool = await Pool.openWithStorage(storage, poolOpts);
  for (const name of VOLUMES) await pool.createVolume(name, VOLUME_BYTES);
  await pool.openExport(VOLUMES[0]!).flush();
  let model: Buffer[] = VOLUMES.map(() => Buffer.alloc(VOLUME_BYTES));
  // Snapshots of the model after each op since the last durable point, oldest first.
  let candidates: Buffer[][] = [model.map((b) => Buffer.from(b))];
  for (const op of ops) {
    if (op.kind === 'restart') {
      await pool.close();
      pool = await Pool.openWithStorage(storage, poolOpts);
      expect(await readAll(pool)).toEqual(model);
      candidates = [model.map((b) => Buffer.from(b))];
      continue;
    }
    if (op.kind === 'powerCut') {
      storage = storage.powerCut();
      pool = await Pool.openWithStorage(storage, poolOpts);
      const found = await readAll(pool);
      const match = candidates.findIndex((c) => c.every((b, i) => b.equals(found[i]!)));
      expect(match, 'state after power cut is not a prefix of the acknowledged operations').toBeGreaterThanOrEqual(0);
      model = candidates[match]!;
      candidates = [model.map((b) => Buffer.from(b))];
      continue;
    }
    const dev = op.kind === 'flush' ? pool.openExport(VOLUMES[0]!) : pool.openExport(VOLUMES[op.vol]!);
    if (op.kind === 'write') await dev.write(op.offset, fillPattern(op.length, op.seed), op.fua);
    else if (op.kind === 'trim') await dev.trim(op.offset, op.length, false);
    else if (op.kind === 'zero') await dev.writeZeroes(op.offset, op.length, { fua: false, mayUnmap: op.mayUnmap });
    else await dev.flush();
    dev.close();
    applyToModel(model, op);
    const snapshot = model.map((b) => Buffer.from(b));
    const durable = op.kind === 'flush' || (op.kind === 'write' && op.fua);
    candidates = durable ? [snapshot] : [...candidates, snapshot];
  }
  expect(await readAll(pool)).toEqual(model);
  await pool.close();
}

describe('engine against a model, with restarts and power cuts', () => {
  it('matches the model byte for byte', async () => {
    await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), runScenario), { numRuns: 150 });
  });
});
