/**
 * The steps of a scenario that are calls on the running pool (I/O through a BlockDevice handle,
 * management through the VolumeManager API), each keeping the model in step with what the
 * engine acknowledged. A failed call is judged (something injected must explain it), and what
 * it may have done is recorded as possible; on a pool that still takes writes the blocks it
 * touched are read back to settle which way it went.
 */
import { isEngineError, type EngineError } from '../errors.ts';
import { BLOCK_BYTES, writeData } from './block-data.ts';
import { SimFailure } from './checker.ts';
import { currentValue, type BlockChange, type ExportModel } from './model.ts';
import { describeError, type RunContext } from './run-context.ts';
import type { RangeSpec, Step } from './scenario.ts';

export type CallStep = Extract<Step, { kind: 'write' | 'trim' | 'zero' | 'read' | 'flush' | 'create' | 'snapshot' | 'clone' | 'delete' | 'resize' | 'clean' }>;

export function isCallStep(step: Step): step is CallStep {
  return !['restart', 'processCrash', 'powerCut', 'crashDuring', 'fault', 'recoveryFault', 'corrupt'].includes(step.kind);
}

export function runCall(ctx: RunContext, step: CallStep): Promise<void> {
  switch (step.kind) {
    case 'write':
    case 'trim':
    case 'zero':
      return dataCall(ctx, step);
    case 'read':
      return readCall(ctx, step);
    case 'flush':
      return flushCall(ctx);
    case 'create':
      return createCall(ctx, step.blocks);
    case 'snapshot':
    case 'clone':
      return deriveCall(ctx, step);
    case 'delete':
      return deleteCall(ctx, step.target);
    case 'resize':
      return resizeCall(ctx, step.target, step.extraBlocks);
    case 'clean':
      return cleanCall(ctx, step.background);
  }
}

/** A range spec made concrete for an export of sizeBytes. */
export function resolveRange(spec: RangeSpec, sizeBytes: number): { offset: number; length: number } {
  if (spec.aligned) {
    const blocks = sizeBytes / BLOCK_BYTES;
    const first = spec.at % blocks;
    return { offset: first * BLOCK_BYTES, length: (1 + ((spec.length - 1) % (blocks - first))) * BLOCK_BYTES };
  }
  const offset = spec.at % sizeBytes;
  return { offset, length: 1 + ((spec.length - 1) % (sizeBytes - offset)) };
}

async function dataCall(ctx: RunContext, step: Extract<Step, { kind: 'write' | 'trim' | 'zero' }>): Promise<void> {
  const names = ctx.model.liveNames('volume');
  if (names.length === 0) return ctx.say(`${step.kind}: skipped (no volume)`);
  const e = ctx.model.get(names[step.target % names.length]!);
  const { offset, length } = resolveRange(step.range, e.sizeBytes);
  const label = `${step.kind} ${e.name} @${offset}+${length}${step.fua ? ' fua' : ''}`;
  const data = step.kind === 'write' ? writeData(step.dataId, length) : undefined;
  const changes =
    step.kind === 'write' ? ctx.model.writeChanges(e, offset, data!) : step.kind === 'trim' ? ctx.model.trimChanges(offset, length) : ctx.model.zeroChanges(e, offset, length);
  const before = new Map(changes.map((c) => [c.lba, currentValue(e.blocks[c.lba]!)]));
  const wasReadOnly = ctx.readOnly;
  const dev = ctx.pool.openExport(e.name);
  try {
    if (step.kind === 'write') await dev.write(offset, data!, step.fua);
    else if (step.kind === 'trim') await dev.trim(offset, length, step.fua);
    else await dev.writeZeroes(offset, length, { fua: step.fua, mayUnmap: step.mayUnmap });
  } catch (err) {
    ctx.say(`${label} → failed: ${describeError(err)}`);
    ctx.judgeFailure(label, err);
    const code = (err as EngineError).code;
    if (wasReadOnly && code !== 'IO_ERROR' && code !== 'READ_ONLY' && !(code === 'NO_SPACE' && ctx.capacityLimited)) {
      throw new SimFailure(`${label} on a read-only pool failed with ${describeError(err)}, not IO_ERROR or READ_ONLY`);
    }
    ctx.model.log(e, changes); // what reached the open batch may still reach the disk
    await settleFailed(ctx, e, changes, before, label);
    return;
  } finally {
    dev.close();
  }
  ctx.say(`${label} → ok`);
  if (wasReadOnly && !ctx.crashing && (changes.length > 0 || step.fua)) throw new SimFailure(`${label} was accepted by a pool that had turned read-only`);
  ctx.model.log(e, changes);
  if (step.fua) ctx.model.flushAll();
}

/**
 * After a call failed on a pool that still takes writes, reads the blocks it touched: each must
 * hold its value from before the call or the call's, and the model takes what is there.
 */
async function settleFailed(ctx: RunContext, e: ExportModel, changes: readonly BlockChange[], before: Map<number, Buffer>, label: string): Promise<void> {
  if (ctx.crashing || ctx.pool.stats().readOnly) return;
  const dev = ctx.pool.openExport(e.name);
  const excuse = ctx.damage.readExcuse(ctx.disk);
  try {
    for (const c of changes) {
      let found: Buffer = Buffer.alloc(BLOCK_BYTES);
      try {
        await dev.read(c.lba * BLOCK_BYTES, found);
      } catch (err) {
        const why = isEngineError(err) && (err.code === 'CORRUPTION' || err.code === 'IO_ERROR') ? excuse(e, c.lba) : undefined;
        if (!why) throw new SimFailure(`after the failed ${label}, reading block ${c.lba} failed: ${describeError(err)}`, { cause: err });
        // The block is read from the disk, so the call did not replace it: it holds its old value.
        found = before.get(c.lba)!;
      }
      if (!ctx.model.settle(e, c.lba, before.get(c.lba)!, found)) {
        throw new SimFailure(`after the failed ${label}, block ${c.lba} holds neither its old value nor the new one`);
      }
    }
  } finally {
    dev.close();
  }
}

async function readCall(ctx: RunContext, step: Extract<Step, { kind: 'read' }>): Promise<void> {
  const names = ctx.model.liveNames();
  if (names.length === 0) return ctx.say('read: skipped (no export)');
  const e = ctx.model.get(names[step.target % names.length]!);
  if (!!ctx.readOnly) {
    ctx.say(`read ${e.name} (whole, pool degraded)`);
    return ctx.checkLive(e, 'read');
  }
  const { offset, length } = resolveRange(step.range, e.sizeBytes);
  const label = `read ${e.name} @${offset}+${length}`;
  const got = Buffer.alloc(length);
  const dev = ctx.pool.openExport(e.name);
  try {
    await dev.read(offset, got);
  } catch (err) {
    ctx.say(`${label} → failed: ${describeError(err)}; checking block by block`);
    ctx.judgeFailure(label, err);
    if (ctx.crashing) return;
    return ctx.checkLive(e, label);
  } finally {
    dev.close();
  }
  const expected = Buffer.alloc(length);
  for (let at = offset; at < offset + length; ) {
    const lba = Math.floor(at / BLOCK_BYTES);
    const inBlock = at - lba * BLOCK_BYTES;
    const n = Math.min(BLOCK_BYTES - inBlock, offset + length - at);
    currentValue(e.blocks[lba]!).copy(expected, at - offset, inBlock, inBlock + n);
    at += n;
  }
  if (!got.equals(expected)) {
    ctx.say(`${label} → mismatch; checking block by block`);
    await ctx.checkLive(e, label);
    throw new SimFailure(`${label} returned other bytes than the whole-export read (partial read bug)`);
  }
  ctx.stats.bytesVerified += length;
  ctx.say(`${label} → ok`);
}

async function flushCall(ctx: RunContext): Promise<void> {
  const names = ctx.model.liveNames();
  if (names.length === 0) return ctx.say('flush: skipped (no export)');
  const dev = ctx.pool.openExport(names[0]!);
  try {
    await dev.flush();
  } catch (err) {
    ctx.say(`flush → failed: ${describeError(err)}`);
    return ctx.judgeFailure('flush', err);
  } finally {
    dev.close();
  }
  if (ctx.readOnly && !ctx.crashing) throw new SimFailure('a flush succeeded on a pool that had turned read-only');
  ctx.say('flush → ok');
  ctx.model.flushAll();
}

async function createCall(ctx: RunContext, blocks: number): Promise<void> {
  const name = ctx.newName('v');
  try {
    await ctx.pool.createVolume(name, blocks * BLOCK_BYTES);
  } catch (err) {
    ctx.say(`create ${name} (${blocks} blocks) → failed: ${describeError(err)}`);
    ctx.judgeFailure(`create ${name}`, err);
    ctx.model.create(name, blocks, { live: ctx.pool.listExports().includes(name), onDisk: 'maybe' });
    return;
  }
  ctx.say(`create ${name} (${blocks} blocks) → ok`);
  ctx.model.create(name, blocks, { live: true, onDisk: 'yes' });
  ctx.model.metadataSynced();
}

async function deriveCall(ctx: RunContext, step: Extract<Step, { kind: 'snapshot' | 'clone' }>): Promise<void> {
  const sources = step.kind === 'snapshot' ? ctx.model.liveNames('volume') : ctx.model.liveNames();
  if (sources.length === 0) return ctx.say(`${step.kind}: skipped (no source)`);
  const source = ctx.model.get(sources[step.target % sources.length]!);
  const name = ctx.newName(step.kind === 'snapshot' ? 's' : 'c');
  const blocks = source.blocks.length + (step.kind === 'clone' ? step.extraBlocks : 0);
  const label = `${step.kind} ${source.name} → ${name}${blocks !== source.blocks.length ? ` (${blocks} blocks)` : ''}`;
  const kind = step.kind === 'snapshot' ? 'snapshot' : 'volume';
  try {
    if (step.kind === 'snapshot') await ctx.pool.createSnapshot(source.name, name);
    else await ctx.pool.cloneVolume(source.name, name, blocks * BLOCK_BYTES);
  } catch (err) {
    ctx.say(`${label} → failed: ${describeError(err)}`);
    ctx.judgeFailure(label, err);
    ctx.model.derive(source, name, kind, blocks, { acknowledged: false, live: ctx.pool.listExports().includes(name) });
    return;
  }
  ctx.say(`${label} → ok`);
  if (ctx.readOnly && !ctx.crashing) throw new SimFailure(`${label} succeeded on a pool that had turned read-only (it flushes the log)`);
  ctx.model.derive(source, name, kind, blocks, { acknowledged: true, live: true });
  ctx.model.flushAll();
  ctx.model.metadataSynced();
}

async function deleteCall(ctx: RunContext, target: number): Promise<void> {
  const names = ctx.model.liveNames();
  if (names.length === 0) return ctx.say('delete: skipped (no export)');
  const e = ctx.model.get(names[target % names.length]!);
  try {
    if (e.kind === 'volume') await ctx.pool.deleteVolume(e.name);
    else await ctx.pool.deleteSnapshot(e.name);
  } catch (err) {
    ctx.say(`delete ${e.name} → failed: ${describeError(err)}`);
    ctx.judgeFailure(`delete ${e.name}`, err);
    e.live = ctx.pool.listExports().includes(e.name);
    e.onDisk = 'maybe';
    return;
  }
  ctx.say(`delete ${e.name} → ok`);
  ctx.model.exports.delete(e.name);
  ctx.model.metadataSynced();
}

async function resizeCall(ctx: RunContext, target: number, extraBlocks: number): Promise<void> {
  const names = ctx.model.liveNames('volume');
  if (names.length === 0) return ctx.say('resize: skipped (no volume)');
  const e = ctx.model.get(names[target % names.length]!);
  const from = e.blocks.length;
  const to = from + extraBlocks;
  try {
    await ctx.pool.resizeVolume(e.name, to * BLOCK_BYTES);
  } catch (err) {
    ctx.say(`resize ${e.name} ${from} → ${to} blocks → failed: ${describeError(err)}`);
    ctx.judgeFailure(`resize ${e.name}`, err);
    if (ctx.pool.getVolume(e.name).sizeBytes === to * BLOCK_BYTES) ctx.model.resize(e, to);
    e.sizesOnDisk = new Set([...e.sizesOnDisk, from, to]);
    return;
  }
  ctx.say(`resize ${e.name} ${from} → ${to} blocks → ok`);
  ctx.model.resize(e, to);
  ctx.model.metadataSynced();
}

async function cleanCall(ctx: RunContext, background: boolean): Promise<void> {
  const pool = ctx.pool;
  const cleaning = pool.clean();
  if (background) {
    ctx.say('clean (in the background)');
    ctx.background(
      cleaning.then(
        (n) => ctx.say(`  background clean freed ${n} segment(s)`),
        (err: unknown) => ctx.say(`  background clean failed: ${describeError(err)}`),
      ),
    );
    return;
  }
  try {
    ctx.say(`clean → freed ${await cleaning} segment(s)`);
  } catch (err) {
    ctx.say(`clean → failed: ${describeError(err)}`);
    ctx.judgeFailure('clean', err);
  }
}
