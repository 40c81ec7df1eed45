// Boot storm (DESIGN.md §6, P6): N VMs cloned from one golden image boot at once, each reading
// the same image. On Braid the clones share the template's blocks, so the disk is read about
// once and the rest comes from memory; the per-file baseline is what a hypervisor does
// natively with full copies: N qemu-nbd processes over N copies, N times the disk reads.
//
// Both sides start cold (page cache dropped, servers restarted). Bytes read from the disk are
// the servers' read_bytes from /proc/PID/io (what they caused to be fetched from storage).

import { readFileSync } from 'node:fs';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EngineClient } from '../../engine/api/client.ts';
import { type BenchContext, dropCaches, progress } from './context.ts';
import { nbdJobs, runFio } from './fio.ts';
import { syncDisks } from './proc.ts';
import { type RunningSystem, type SystemSpec, startSystem } from './systems.ts';
import { type Cell, fixed, formatTable, ratio } from './table.ts';

export interface BootstormOptions {
  vms: number;
  imageBytes: number;
}

interface StormResult {
  label: string;
  diskReadBytes: number;
  mbps: number;
}

const FIO_TIMEOUT_MS = 30 * 60_000;

/** Bytes the processes (threads included) caused to be read from storage. */
function readBytes(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    const m = /^read_bytes:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    total += m ? Number(m[1]) : 0;
  }
  return total;
}

async function fillImage(dir: string, uriOrFile: { uri?: string; filename?: string }, bytes: number): Promise<void> {
  const global = { rw: 'write', bs: '1M', size: bytes, end_fsync: 1, thread: 1, ioengine: uriOrFile.uri ? 'nbd' : 'psync', iodepth: 4 };
  const options = uriOrFile.uri ? { uri: uriOrFile.uri } : { filename: uriOrFile.filename ?? '' };
  await runFio(join(dir, 'fill.fio'), global, [{ name: 'fill', options }], FIO_TIMEOUT_MS);
}

/** Every VM reads its whole disk at once; returns the result measured on the restarted system. */
async function storm(label: string, dir: string, system: RunningSystem, opts: BootstormOptions): Promise<StormResult> {
  const before = readBytes(system.pids());
  const global = { ioengine: 'nbd', rw: 'read', bs: '256k', iodepth: 4, size: opts.imageBytes, thread: 1 };
  const { result } = await runFio(join(dir, 'storm.fio'), global, nbdJobs(system.uris), FIO_TIMEOUT_MS);
  const diskReadBytes = readBytes(system.pids()) - before;
  const seconds = result.read.runtimeMs / 1000;
  return { label, diskReadBytes, mbps: seconds > 0 ? result.read.ioBytes / 1e6 / seconds : 0 };
}

async function engineSide(ctx: BenchContext, opts: BootstormOptions, vms: string[]): Promise<StormResult> {
  const spec: SystemSpec = { kind: 'engine', dir: join(ctx.scratchDir, 'engine'), vms, volumeSizeBytes: opts.imageBytes, repoDir: ctx.repoDir, perFileCache: ctx.perFileCache };
  const first = await startSystem({ ...spec, vms: [] }, false);
  try {
    const client = EngineClient.connect(join(spec.dir, 'braid', 'engine.sock'));
    await client.createVolume('golden', opts.imageBytes);
    await fillImage(spec.dir, { uri: `nbd+unix:///golden?socket=${join(spec.dir, 'braid', 'nbd.sock')}` }, opts.imageBytes);
    await client.createSnapshot('golden', 'golden-v1');
    for (const vm of vms) await client.cloneVolume('golden-v1', vm);
    client.close();
  } finally {
    await first.stop();
  }
  await syncDisks();
  await dropCaches();
  const system = await startSystem(spec, false);
  try {
    progress(`bootstorm: engine, ${vms.length} clones`);
    return await storm(`engine (${vms.length} clones of one image)`, spec.dir, system, opts);
  } finally {
    await system.stop();
  }
}

async function perFileSide(ctx: BenchContext, opts: BootstormOptions, vms: string[]): Promise<StormResult> {
  const spec: SystemSpec = { kind: 'perfile', dir: join(ctx.scratchDir, 'perfile'), vms, volumeSizeBytes: opts.imageBytes, repoDir: ctx.repoDir, perFileCache: ctx.perFileCache };
  const files = vms.map((vm) => join(spec.dir, `${vm}.raw`));
  const setup = await startSystem({ ...spec, vms: [] }, true); // makes the directory
  await setup.stop();
  progress(`bootstorm: writing ${vms.length} full copies of the image for per-file`);
  await fillImage(spec.dir, { filename: files[0] ?? '' }, opts.imageBytes);
  for (const file of files.slice(1)) await copyFile(files[0] ?? '', file);
  await syncDisks();
  await dropCaches();
  const system = await startSystem(spec, false);
  try {
    progress(`bootstorm: per-file, ${vms.length} copies`);
    return await storm(`per-file qemu-nbd (${vms.length} full copies)`, spec.dir, system, opts);
  } finally {
    await system.stop();
  }
}

export async function bootstorm(ctx: BenchContext, opts: BootstormOptions): Promise<boolean> {
  const vms = Array.from({ length: opts.vms }, (_, i) => `vm${i}`);
  const engine = await engineSide(ctx, opts, vms);
  const perfile = await perFileSide(ctx, opts, vms);
  const rows: Cell[][] = [engine, perfile].map((r) => [r.label, fixed(r.diskReadBytes / 2 ** 20, 0), fixed(r.diskReadBytes / opts.imageBytes, 2), fixed(r.mbps, 0)]);
  process.stdout.write(`${formatTable(['system', 'disk read MiB', 'x image', 'MB/s (all VMs)'], rows)}\n`);
  process.stdout.write(
    `bootstorm vms=${opts.vms} image_mib=${opts.imageBytes / 2 ** 20} engine_disk_read_x=${(engine.diskReadBytes / opts.imageBytes).toFixed(2)} ` +
      `perfile_disk_read_x=${(perfile.diskReadBytes / opts.imageBytes).toFixed(2)} throughput_ratio=${ratio(engine.mbps, perfile.mbps)}\n`,
  );
  return true;
}
