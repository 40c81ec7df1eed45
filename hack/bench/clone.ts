// Clone cost (DESIGN.md §6, P5): a clone is metadata only, so cloning a fully written 1 GiB
// template and a fully written 8 GiB one must take the same (short) time, and 100 clones must
// add almost nothing to the pool's physical size.
//
// Templates are filled through NBD with fio (1 MiB sequential writes, then a flush), so their
// data sits in the log as a real golden image's would. Each clone is timed as one engine API
// call (CloneVolume over DIR/engine.sock) from this process: that is the operation's own
// latency, without a CLI process start-up in it. The median of several clones is reported.

import { join } from 'node:path';
import { EngineClient } from '../../engine/api/client.ts';
import { type BenchContext, progress } from './context.ts';
import { runFio } from './fio.ts';
import { startSystem } from './systems.ts';
import { type Cell, fixed, formatTable } from './table.ts';

export interface CloneOptions {
  /** Template sizes to compare (default 1 GiB and 8 GiB). */
  templateBytes: number[];
  /** Clones timed per template. */
  samples: number;
  /** Clones made of the first template for the space figure. */
  spaceClones: number;
}

interface TemplateResult {
  sizeBytes: number;
  medianMs: number;
  maxMs: number;
}

const FILL_TIMEOUT_MS = 30 * 60_000;

async function fill(ctx: BenchContext, dir: string, uri: string, sizeBytes: number): Promise<void> {
  const global = { ioengine: 'nbd', rw: 'write', bs: '1M', iodepth: 4, size: sizeBytes, end_fsync: 1, thread: 1 };
  await runFio(join(dir, `fill-${sizeBytes}.fio`), global, [{ name: 'fill', options: { uri } }], FILL_TIMEOUT_MS);
  void ctx;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

async function timeClones(client: EngineClient, source: string, prefix: string, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    await client.cloneVolume(source, `${prefix}-${i}`);
    times.push(performance.now() - start);
  }
  return times;
}

export async function clone(ctx: BenchContext, opts: CloneOptions): Promise<boolean> {
  const dir = join(ctx.scratchDir, 'engine');
  const vms = opts.templateBytes.map((_, i) => `template${i}`);
  const maxSize = Math.max(...opts.templateBytes);
  const system = await startSystem({ kind: 'engine', dir, vms: [], volumeSizeBytes: maxSize, repoDir: ctx.repoDir, perFileCache: ctx.perFileCache }, false);
  const client = EngineClient.connect(join(dir, 'braid', 'engine.sock'));
  try {
    const results: TemplateResult[] = [];
    for (const [i, sizeBytes] of opts.templateBytes.entries()) {
      const name = vms[i] ?? 'template';
      await client.createVolume(name, sizeBytes);
      progress(`clone: filling ${name} (${sizeBytes / 2 ** 30} GiB)`);
      await fill(ctx, dir, `nbd+unix:///${name}?socket=${join(dir, 'braid', 'nbd.sock')}`, sizeBytes);
      const times = await timeClones(client, name, `c${i}`, opts.samples);
      results.push({ sizeBytes, medianMs: median(times), maxMs: Math.max(...times) });
    }
    const before = (await client.stats()).physicalBytes;
    const firstTemplate = vms[0] ?? 'template0';
    await timeClones(client, firstTemplate, 'space', opts.spaceClones);
    const after = (await client.stats()).physicalBytes;
    const templateBytes = opts.templateBytes[0] ?? 0;
    const addedPct = (100 * (after - before)) / templateBytes;
    const rows: Cell[][] = results.map((r) => [`${r.sizeBytes / 2 ** 30} GiB`, fixed(r.medianMs, 2), fixed(r.maxMs, 2)]);
    process.stdout.write(`${formatTable(['template', 'clone median ms', 'clone max ms'], rows)}\n`);
    process.stdout.write(`${opts.spaceClones} clones of the ${templateBytes / 2 ** 30} GiB template added ${after - before} bytes of log (${addedPct.toFixed(3)}% of the template)\n`);
    const medians = results.map((r) => `clone_ms_${r.sizeBytes / 2 ** 30}g=${r.medianMs.toFixed(2)}`).join(' ');
    process.stdout.write(`clone ${medians} space_clones=${opts.spaceClones} space_added_pct=${addedPct.toFixed(3)}\n`);
    return true;
  } finally {
    client.close();
    await system.stop();
  }
}
