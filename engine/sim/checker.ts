/**
 * Checks what a pool returns against the model. Reads go through the same BlockDevice handles
 * a front end uses. Each check throws SimFailure naming the export, the block and what was
 * found instead (whose data it was, if anyone's), so a failing seed explains itself.
 */
import { isEngineError } from '../errors.ts';
import type { Pool } from '../pool.ts';
import { BLOCK_BYTES, ZERO_BLOCK } from './block-data.ts';
import { allowedValues, currentValue, type ExportModel, type Model } from './model.ts';

/** The engine broke one of its promises. */
export class SimFailure extends Error {
  override name = 'SimFailure';
}

/**
 * Explains why reading a block may fail (a known corruption), or undefined if it may not. When
 * the damage hit the block's own data, `holds` is the value that was damaged: what the block
 * still stands for, unreadable.
 */
export type ReadExcuse = (e: ExportModel, lba: number) => { why: string; holds?: Buffer } | undefined;

export interface ReadBack {
  /** undefined where the read failed with an excused error. */
  blocks: Array<Buffer | undefined>;
  /** For blocks whose read failed on damage to their data: the value they stand for. */
  unreadable: Map<number, Buffer>;
  bytesRead: number;
  excusedFailures: number;
}

/** What the checker may know about damaged bytes, to name them when they come back. */
export interface DamageCatalog {
  describe(value: Buffer): string | undefined;
}

function failureOf(err: unknown): string {
  if (isEngineError(err)) return `${err.code}: ${err.message}`;
  return err instanceof Error ? `${err.name}: ${err.message} (not an EngineError)` : String(err);
}

/**
 * Reads an export whole. When that fails with CORRUPTION or IO_ERROR, reads block by block so
 * that each failing block can be excused by a known corruption; anything else fails the check.
 */
export async function readExport(pool: Pool, e: ExportModel, excuse: ReadExcuse, context: string): Promise<ReadBack> {
  const dev = pool.openExport(e.name);
  try {
    const size = dev.sizeBytes;
    const whole = Buffer.alloc(size);
    const blocks: Array<Buffer | undefined> = [];
    try {
      await dev.read(0, whole);
      for (let at = 0; at < size; at += BLOCK_BYTES) blocks.push(whole.subarray(at, at + BLOCK_BYTES));
      return { blocks, unreadable: new Map(), bytesRead: size, excusedFailures: 0 };
    } catch (err) {
      if (!isEngineError(err) || (err.code !== 'CORRUPTION' && err.code !== 'IO_ERROR')) {
        throw new SimFailure(`${context}: reading ${e.kind} ${e.name} failed: ${failureOf(err)}`, { cause: err });
      }
    }
    let excused = 0;
    let bytesRead = 0;
    const unreadable = new Map<number, Buffer>();
    for (let lba = 0; lba * BLOCK_BYTES < size; lba++) {
      const block = Buffer.alloc(BLOCK_BYTES);
      try {
        await dev.read(lba * BLOCK_BYTES, block);
        blocks.push(block);
        bytesRead += BLOCK_BYTES;
      } catch (err) {
        const why = isEngineError(err) && (err.code === 'CORRUPTION' || err.code === 'IO_ERROR') ? excuse(e, lba) : undefined;
        if (!why) throw new SimFailure(`${context}: reading block ${lba} of ${e.kind} ${e.name} failed and no injected damage explains it: ${failureOf(err)}`, { cause: err });
        blocks.push(undefined);
        if (why.holds) unreadable.set(lba, why.holds);
        excused++;
      }
    }
    return { blocks, unreadable, bytesRead, excusedFailures: excused };
  } finally {
    dev.close();
  }
}

/**
 * Checks every block read back: `exact` wants the current value (nothing failed since the last
 * recovery); otherwise any value allowed after a crash (the durable one or a later one).
 */
export function verifyBlocks(model: Model, e: ExportModel, found: ReadBack, opts: { exact: boolean; context: string; damage: DamageCatalog }): void {
  for (let lba = 0; lba < found.blocks.length; lba++) {
    const got = found.blocks[lba];
    const state = e.blocks[lba];
    if (!got || !state) continue;
    const ok = opts.exact ? got.equals(currentValue(state)) : allowedValues(state).some((v) => v.equals(got));
    if (ok) continue;
    const expected = opts.exact ? 'its current value' : `its last flushed value or a later one (${state.after.length} later)`;
    const what = describeValue(model, got, opts.damage);
    const snapshotNote = e.immutable ? ' — a snapshot changed' : '';
    throw new SimFailure(`${opts.context}: ${e.kind} ${e.name} block ${lba} should hold ${expected} but holds ${what}${snapshotNote}`);
  }
}

/** Names a value: zeros, damaged bytes, or whose data it is in the model. */
export function describeValue(model: Model, value: Buffer, damage: DamageCatalog): string {
  const damaged = damage.describe(value);
  if (damaged) return damaged;
  const seen: string[] = [];
  for (const e of model.exports.values()) {
    e.blocks.forEach((b, lba) => {
      if (b.durable.equals(value)) seen.push(`${e.name}[${lba}] flushed`);
      b.after.forEach((v, i) => {
        if (v.equals(value)) seen.push(`${e.name}[${lba}] unflushed #${i + 1}`);
      });
    });
  }
  if (value.equals(ZERO_BLOCK)) return 'zeros';
  if (seen.length > 0) return `the value of ${seen.slice(0, 4).join(', ')}${seen.length > 4 ? ', …' : ''}`;
  const origin = model.origin(value);
  if (origin) return `an older value, the one written to ${origin}`;
  return `bytes never written (it starts ${value.subarray(0, 8).toString('hex')})`;
}
