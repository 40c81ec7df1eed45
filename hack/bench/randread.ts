// Random reads (DESIGN.md §6, P3): the log must not tax reads. Each VM's disk is first filled
// with --prefill bytes, written sequentially through the same server (so the engine's data sits
// in its log as it would after real use); then every server is restarted and the page cache
// dropped, so both sides start cold: no server-side cache, nothing of the data in memory.
// Then 4 KiB random reads at iodepth 8 per VM, over the filled region only (reads of holes
// would measure nothing but zero-filling).

import { join } from 'node:path';
import { type BenchContext, dropCaches, progress } from './context.ts';
import { startCpuWindow } from './cpu.ts';
import { type FioSection, nbdJobs, runFio } from './fio.ts';
import { SYSTEM_LABELS, type SystemKind, type SystemSpec, startSystem } from './systems.ts';
import { type Cell, fixed, formatTable, ratio, whole } from './table.ts';

export interface RandreadOptions {
  vms: number;
  seconds: number;
  prefillBytes: number;
  iodepth: number;
  volumeSizeBytes: number;
}

interface ReadResult {
  kind: SystemKind;
  iops?: number;
  p50Us?: number;
  p99Us?: number;
  cpuSecondsPer1000?: number;
  error?: string;
}

const FIO_SLACK_MS = 300_000;

function prefillGlobal(opts: RandreadOptions): FioSection {
  return { ioengine: 'nbd', rw: 'write', bs: '1M', iodepth: 4, size: opts.prefillBytes, end_fsync: 1, thread: 1, group_reporting: 1 };
}

function readGlobal(opts: RandreadOptions): FioSection {
  return {
    ioengine: 'nbd',
    rw: 'randread',
    bs: '4k',
    iodepth: opts.iodepth,
    // Offsets within the prefilled region only.
    size: opts.prefillBytes,
    time_based: 1,
    runtime: opts.seconds,
    randrepeat: 0,
    thread: 1,
    group_reporting: 1,
  };
}

async function measure(ctx: BenchContext, kind: SystemKind, opts: RandreadOptions): Promise<ReadResult> {
  const dir = join(ctx.scratchDir, kind);
  const vms = Array.from({ length: opts.vms }, (_, i) => `vm${i}`);
  const spec: SystemSpec = { kind, dir, vms, volumeSizeBytes: opts.volumeSizeBytes, repoDir: ctx.repoDir, perFileCache: ctx.perFileCache };
  const timeoutMs = opts.seconds * 1000 + FIO_SLACK_MS;

  progress(`${kind}: prefilling ${opts.vms} × ${fixed(opts.prefillBytes / 2 ** 20, 0)} MiB`);
  const filler = await startSystem(spec, true);
  try {
    await runFio(join(dir, 'prefill.fio'), prefillGlobal(opts), nbdJobs(filler.uris), timeoutMs);
  } finally {
    await filler.stop();
  }

  await dropCaches();
  progress(`${kind}: restarted cold, reading ${opts.seconds} s`);
  const system = await startSystem(spec, false);
  try {
    const cpu = await startCpuWindow(system.pids());
    const { result } = await runFio(join(dir, 'randread.fio'), readGlobal(opts), nbdJobs(system.uris), timeoutMs);
    const usage = cpu.finish();
    const reads = result.read.totalIos;
    return {
      kind,
      iops: result.read.iops,
      ...(result.read.clat && { p50Us: result.read.clat.p50Us, p99Us: result.read.clat.p99Us }),
      ...(reads > 0 && { cpuSecondsPer1000: (usage.serverSeconds / reads) * 1000 }),
    };
  } finally {
    await system.stop();
  }
}

export async function randread(ctx: BenchContext, opts: RandreadOptions): Promise<boolean> {
  const results: ReadResult[] = [];
  for (const kind of ctx.systems) {
    try {
      results.push(await measure(ctx, kind, opts));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      process.stdout.write(`${kind}: FAILED: ${message}\n`);
      results.push({ kind, error: message });
    }
  }
  const rows: Cell[][] = results.map((r) =>
    r.error !== undefined
      ? [SYSTEM_LABELS[r.kind], 'failed']
      : [SYSTEM_LABELS[r.kind], whole(r.iops), fixed(r.p50Us, 0), fixed(r.p99Us, 0), fixed(r.cpuSecondsPer1000, 3)],
  );
  const of = (kind: SystemKind): ReadResult | undefined => results.find((r) => r.kind === kind && r.error === undefined);
  process.stdout.write(
    `\nrandread: ${opts.vms} VMs × 4 KiB random read, iodepth ${opts.iodepth}, over ${fixed(opts.prefillBytes / 2 ** 20, 0)} MiB each, cold, ${opts.seconds} s\n`,
  );
  process.stdout.write(`${formatTable(['system', 'IOPS', 'p50 µs', 'p99 µs', 'CPU s/1000 IO'], rows)}\n\n`);
  process.stdout.write(
    `randread vms=${opts.vms} engine_iops=${whole(of('engine')?.iops)} perfile_iops=${whole(of('perfile')?.iops)} ratio=${ratio(of('engine')?.iops, of('perfile')?.iops)}\n`,
  );
  return results.every((r) => r.error === undefined);
}
