// Sequential write bandwidth (DESIGN.md §6, P4): one engine volume written front to back in 1 MiB
// writes, against what the same filesystem gives a plain file. Both end with one fsync
// (end_fsync=1), and fio's runtime includes that fsync (checked: runtime equals wall time, not
// the time to fill the page cache), so the figure is bytes made durable per second.
//
// Each side writes --size bytes once, or stops at --seconds if that comes first. A time_based
// run would wrap around and rewrite the volume, which for a log engine measures the cleaner,
// not sequential bandwidth.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type BenchContext, dropCaches, progress } from './context.ts';
import { type FioResult, type FioSection, runFio } from './fio.ts';
import { startSystem } from './systems.ts';
import { type Cell, fixed, formatTable, ratio } from './table.ts';

export interface SeqwriteOptions {
  seconds: number;
  sizeBytes: number;
  /** Requests in flight over NBD: a guest's virtio-blk queue keeps several 1 MiB writes going. */
  iodepth: number;
}

interface SeqResult {
  label: string;
  mbps?: number;
  seconds?: number;
  bytes?: number;
  error?: string;
}

const FIO_SLACK_MS = 300_000;

function commonGlobal(opts: SeqwriteOptions): FioSection {
  return { rw: 'write', bs: '1M', size: opts.sizeBytes, runtime: opts.seconds, end_fsync: 1, thread: 1 };
}

function toResult(label: string, result: FioResult): SeqResult {
  const { ioBytes, runtimeMs } = result.write;
  return { label, bytes: ioBytes, seconds: runtimeMs / 1000, mbps: runtimeMs > 0 ? ioBytes / 1e6 / (runtimeMs / 1000) : 0 };
}

async function engineRun(ctx: BenchContext, opts: SeqwriteOptions): Promise<SeqResult> {
  const dir = join(ctx.scratchDir, 'engine');
  const spec = { kind: 'engine' as const, dir, vms: ['seq'], volumeSizeBytes: opts.sizeBytes, repoDir: ctx.repoDir, perFileCache: ctx.perFileCache };
  const system = await startSystem(spec, true);
  try {
    const global = { ...commonGlobal(opts), ioengine: 'nbd', iodepth: opts.iodepth };
    const jobs = [{ name: 'seq', options: { uri: system.uris.get('seq') ?? '' } }];
    const { result } = await runFio(join(dir, 'seq.fio'), global, jobs, opts.seconds * 1000 + FIO_SLACK_MS);
    return toResult(`engine (nbd, iodepth ${opts.iodepth})`, result);
  } finally {
    await system.stop();
  }
}

async function rawRun(ctx: BenchContext, opts: SeqwriteOptions): Promise<SeqResult> {
  const dir = join(ctx.scratchDir, 'raw');
  mkdirSync(dir, { recursive: true });
  const global = {
    ...commonGlobal(opts),
    // Buffered writes and one fsync at the end: the best case the filesystem offers a writer.
    ioengine: 'psync',
    direct: 0,
    // No preallocation: a fresh file grows as it is written, as the engine's log does.
    fallocate: 'none',
  };
  const jobs = [{ name: 'raw', options: { filename: join(dir, 'seq.raw') } }];
  const { result } = await runFio(join(dir, 'seq.fio'), global, jobs, opts.seconds * 1000 + FIO_SLACK_MS);
  return toResult('raw file (psync, direct=0)', result);
}

async function attempt(label: string, task: () => Promise<SeqResult>): Promise<SeqResult> {
  // Start each side with no dirty pages and an empty page cache.
  await dropCaches();
  progress(`seqwrite: ${label}`);
  try {
    return await task();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    process.stdout.write(`${label}: FAILED: ${message}\n`);
    return { label, error: message };
  }
}

export async function seqwrite(ctx: BenchContext, opts: SeqwriteOptions): Promise<boolean> {
  const engine = await attempt(`engine (nbd, iodepth ${opts.iodepth})`, () => engineRun(ctx, opts));
  const raw = await attempt('raw file (psync, direct=0)', () => rawRun(ctx, opts));
  const rows: Cell[][] = [engine, raw].map((r) =>
    r.error !== undefined ? [r.label, 'failed'] : [r.label, fixed(r.mbps, 0), fixed((r.bytes ?? 0) / 2 ** 20, 0), fixed(r.seconds, 2)],
  );
  process.stdout.write(`\nseqwrite: 1 MiB sequential writes + end fsync, up to ${fixed(opts.sizeBytes / 2 ** 20, 0)} MiB or ${opts.seconds} s\n`);
  process.stdout.write(`${formatTable(['system', 'MB/s', 'MiB written', 'seconds'], rows)}\n\n`);
  process.stdout.write(`seqwrite engine_mbps=${fixed(engine.mbps, 0)} raw_mbps=${fixed(raw.mbps, 0)} ratio=${ratio(engine.mbps, raw.mbps)}\n`);
  return engine.error === undefined && raw.error === undefined;
}
