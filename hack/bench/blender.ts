// The VM I/O blender (DESIGN.md §6, P1/P2): N VMs each write 4 KiB at random offsets of their own
// disk and flush after every write (fio fsync=1 → NBD_CMD_FLUSH), at iodepth 1, against each
// system in turn, in one scratch directory on one disk.
//
// Measurement window: a short warm-up pass (same job, not measured) lets each server reach its
// steady state (Node's JIT, page cache, file metadata); then the measured pass runs with no
// ramp_time, so the server CPU sampled around the fio process and fio's IO count cover exactly
// the same IOs. fio's connection set-up falls inside the CPU window; it is 2 × N handshakes,
// negligible next to seconds of IO.

import { join } from 'node:path';
import { type BenchContext, progress } from './context.ts';
import { startCpuWindow } from './cpu.ts';
import { type FioSection, nbdJobs, runFio } from './fio.ts';
import { syncDisks } from './proc.ts';
import { type EngineStats, SYSTEM_LABELS, type SystemKind, startSystem } from './systems.ts';
import { type Cell, fixed, formatTable, ratio, whole } from './table.ts';

export interface BlenderOptions {
  vms: number;
  seconds: number;
  warmupSeconds: number;
  volumeSizeBytes: number;
  /** Engine volumes with inline dedup (the dedup benchmark compares both). */
  dedup?: boolean;
}

export interface BlenderResult {
  kind: SystemKind;
  iops?: number;
  writeP50Us?: number;
  writeP99Us?: number;
  flushP50Us?: number;
  flushP99Us?: number;
  /** Server CPU seconds (user + system, all threads) per 1000 write+flush pairs. */
  cpuSecondsPer1000?: number;
  /** fio's CPU seconds per 1000 IOs: on a small machine the client competes with the server. */
  clientCpuSecondsPer1000?: number;
  hostBusyPercent?: number;
  engineStats?: EngineStats;
  error?: string;
}

/** Extra time fio gets beyond its runtime before we kill it (connecting N jobs, end of run). */
const FIO_SLACK_MS = 120_000;

export function blenderFioGlobal(seconds: number): FioSection {
  return {
    ioengine: 'nbd',
    rw: 'randwrite',
    bs: '4k',
    iodepth: 1,
    // One NBD_CMD_FLUSH after every write: the guest's journal commit or database fsync.
    fsync: 1,
    time_based: 1,
    runtime: seconds,
    // Every VM writes its own random offsets: without this every job would replay one sequence.
    randrepeat: 0,
    // Threads, not processes: 64 fio processes would cost the 2-core machine more than the
    // servers under test.
    thread: 1,
    group_reporting: 1,
  };
}

function vmNames(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `vm${i}`);
}

export async function measureBlender(ctx: BenchContext, kind: SystemKind, opts: BlenderOptions): Promise<BlenderResult> {
  const dir = join(ctx.scratchDir, opts.dedup === true ? `${kind}-dedup` : kind);
  const spec = { kind, dir, vms: vmNames(opts.vms), volumeSizeBytes: opts.volumeSizeBytes, repoDir: ctx.repoDir, perFileCache: ctx.perFileCache, dedup: opts.dedup === true };
  progress(`${kind}: starting, ${opts.vms} disks`);
  const system = await startSystem(spec, true);
  try {
    const jobs = nbdJobs(system.uris);
    const timeoutMs = (opts.seconds + opts.warmupSeconds) * 1000 + FIO_SLACK_MS;
    if (opts.warmupSeconds > 0) {
      progress(`${kind}: warm-up ${opts.warmupSeconds} s`);
      await runFio(join(dir, 'warmup.fio'), blenderFioGlobal(opts.warmupSeconds), jobs, timeoutMs);
    }
    progress(`${kind}: measuring ${opts.seconds} s`);
    const cpu = await startCpuWindow(system.pids());
    const { result } = await runFio(join(dir, 'blender.fio'), blenderFioGlobal(opts.seconds), jobs, timeoutMs);
    const usage = cpu.finish();
    const engineStats = await system.engineStats().catch((error: unknown) => {
      progress(`${kind}: braid stats failed: ${String(error)}`);
      return undefined;
    });
    const writes = result.write.totalIos;
    return {
      kind,
      iops: result.write.iops,
      ...(result.write.clat && { writeP50Us: result.write.clat.p50Us, writeP99Us: result.write.clat.p99Us }),
      ...(result.sync && { flushP50Us: result.sync.p50Us, flushP99Us: result.sync.p99Us }),
      ...(writes > 0 && {
        cpuSecondsPer1000: (usage.serverSeconds / writes) * 1000,
        clientCpuSecondsPer1000: (usage.clientSeconds / writes) * 1000,
      }),
      hostBusyPercent: usage.hostBusyFraction * 100,
      ...(engineStats && { engineStats }),
    };
  } finally {
    await system.stop();
    // Write back this system's dirty pages now, so they are not written during the next one.
    await syncDisks();
  }
}

export function blenderTable(results: readonly BlenderResult[]): string {
  const headers = ['system', 'IOPS', 'wr p50 µs', 'wr p99 µs', 'flush p50 µs', 'flush p99 µs', 'CPU s/1000 IO', 'fio CPU s/1000 IO', 'host busy %', 'flushes/fdatasync', 'writes/batch'];
  const rows: Cell[][] = results.map((r) =>
    r.error !== undefined
      ? [SYSTEM_LABELS[r.kind], 'failed']
      : [
          SYSTEM_LABELS[r.kind],
          whole(r.iops),
          fixed(r.writeP50Us, 0),
          fixed(r.writeP99Us, 0),
          fixed(r.flushP50Us, 0),
          fixed(r.flushP99Us, 0),
          fixed(r.cpuSecondsPer1000, 3),
          fixed(r.clientCpuSecondsPer1000, 3),
          fixed(r.hostBusyPercent, 0),
          r.engineStats && fixed(r.engineStats.flushesPerFdatasync, 2),
          r.engineStats && fixed(r.engineStats.writesPerBatch, 2),
        ],
  );
  return formatTable(headers, rows);
}

/** The last line of the run, parsed by scripts: keep its shape. */
export function blenderSummaryLine(vms: number, results: readonly BlenderResult[]): string {
  const of = (kind: SystemKind): BlenderResult | undefined => results.find((r) => r.kind === kind && r.error === undefined);
  const engine = of('engine');
  const perfile = of('perfile');
  const nbdkit = of('nbdkit');
  return [
    `blender vms=${vms}`,
    `engine_iops=${whole(engine?.iops)}`,
    `perfile_iops=${whole(perfile?.iops)}`,
    `nbdkit_iops=${whole(nbdkit?.iops)}`,
    `iops_ratio=${ratio(engine?.iops, perfile?.iops)}`,
    `cpu_ratio=${ratio(engine?.cpuSecondsPer1000, perfile?.cpuSecondsPer1000)}`,
  ].join(' ');
}

export async function blender(ctx: BenchContext, opts: BlenderOptions): Promise<boolean> {
  const results: BlenderResult[] = [];
  for (const kind of ctx.systems) {
    try {
      results.push(await measureBlender(ctx, kind, opts));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      process.stdout.write(`${kind}: FAILED: ${message}\n`);
      results.push({ kind, error: message });
    }
  }
  process.stdout.write(
    `\nblender: ${opts.vms} VMs × 4 KiB random write + flush, iodepth 1, ${opts.seconds} s measured after ${opts.warmupSeconds} s warm-up\n`,
  );
  process.stdout.write(`${blenderTable(results)}\n\n${blenderSummaryLine(opts.vms, results)}\n`);
  return results.every((r) => r.error === undefined);
}
