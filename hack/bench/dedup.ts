// Inline dedup (issue: "16 volumes each written with the same 256 MiB file: physical ≤ 1.1x
// 256 MiB; blender IOPS with dedup on ≥ 0.7x with dedup off").
//
// Space: one random image file, written by 16 nbdcopy processes at once into 16 dedup volumes
// (all at once is the harder case: the same blocks arrive from every volume within one batch
// window). physical_x is the pool's physical bytes over the image size.
//
// Speed: the blender (4 KiB random write + flush per VM) on engine volumes without and with
// dedup. fio's buffers differ per write, so every block is hashed and none matches: this is the
// price of dedup where it cannot help.

import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { type BlenderOptions, type BlenderResult, measureBlender } from './blender.ts';
import { type BenchContext, progress } from './context.ts';
import { runOk } from './proc.ts';
import { braidBin, startSystem } from './systems.ts';
import { type Cell, fixed, formatTable } from './table.ts';

export interface DedupOptions {
  volumes: number;
  imageBytes: number;
  blender: BlenderOptions;
}

interface SpaceResult {
  physicalBytes: number;
  logicalBytes: number;
  savedByDedupBytes: number;
  seconds: number;
}

const CHUNK = 8 * 1024 * 1024;

function writeRandomImage(path: string, bytes: number): void {
  const fd = openSync(path, 'w');
  const chunk = Buffer.allocUnsafe(CHUNK);
  try {
    for (let done = 0; done < bytes; done += CHUNK) {
      randomFillSync(chunk);
      writeSync(fd, chunk, 0, Math.min(CHUNK, bytes - done));
    }
  } finally {
    closeSync(fd);
  }
}

async function measureSpace(ctx: BenchContext, opts: DedupOptions): Promise<SpaceResult> {
  const dir = join(ctx.scratchDir, 'space');
  const image = join(ctx.scratchDir, 'image.raw');
  progress(`space: writing a ${opts.imageBytes >> 20} MiB random image`);
  writeRandomImage(image, opts.imageBytes);
  const vms = Array.from({ length: opts.volumes }, (_, i) => `d${i}`);
  const system = await startSystem(
    { kind: 'engine', dir, vms, volumeSizeBytes: opts.imageBytes, repoDir: ctx.repoDir, perFileCache: ctx.perFileCache, dedup: true },
    true,
  );
  try {
    progress(`space: ${opts.volumes} nbdcopy at once into ${opts.volumes} dedup volumes`);
    const start = performance.now();
    await Promise.all(vms.map((vm) => runOk('nbdcopy', ['--flush', image, system.uris.get(vm)!], { timeoutMs: 30 * 60_000 })));
    const seconds = (performance.now() - start) / 1000;
    const text = await runOk(braidBin(ctx.repoDir), ['stats', '--json', '--data', join(dir, 'braid')], { timeoutMs: 60_000 });
    const stats = JSON.parse(text) as Record<string, number>;
    return { physicalBytes: stats.physicalBytes!, logicalBytes: stats.logicalBytes!, savedByDedupBytes: stats.savedByDedupBytes!, seconds };
  } finally {
    await system.stop();
  }
}

export async function dedup(ctx: BenchContext, opts: DedupOptions): Promise<boolean> {
  const space = await measureSpace(ctx, opts);
  const runs: Array<BlenderResult & { label: string }> = [];
  for (const on of [false, true]) {
    const label = on ? 'engine, dedup on' : 'engine, dedup off';
    progress(`blender: ${label}`);
    runs.push({ label, ...(await measureBlender(ctx, 'engine', { ...opts.blender, dedup: on })) });
  }
  const mib = (b: number): Cell => fixed(b / 2 ** 20, 1);
  process.stdout.write(`\ndedup: ${opts.volumes} dedup volumes, each written with the same ${opts.imageBytes >> 20} MiB random image (all at once)\n`);
  process.stdout.write(
    `${formatTable(
      ['image MiB', 'logical MiB', 'physical MiB', 'saved by dedup MiB', 'physical / image', 'seconds'],
      [[mib(opts.imageBytes), mib(space.logicalBytes), mib(space.physicalBytes), mib(space.savedByDedupBytes), fixed(space.physicalBytes / opts.imageBytes, 3), fixed(space.seconds, 1)]],
    )}\n`,
  );
  process.stdout.write(`\nblender with and without dedup: ${opts.blender.vms} VMs × 4 KiB random write + flush, ${opts.blender.seconds} s\n`);
  process.stdout.write(
    `${formatTable(
      ['system', 'IOPS', 'write p99 µs', 'CPU s / 1000 writes'],
      runs.map((r) => [r.label, fixed(r.iops ?? 0, 0), fixed(r.writeP99Us ?? 0, 0), fixed(r.cpuSecondsPer1000 ?? 0, 3)]),
    )}\n`,
  );
  const off = runs[0]?.iops ?? 0;
  const on = runs[1]?.iops ?? 0;
  process.stdout.write(
    `\ndedup volumes=${opts.volumes} image_mib=${opts.imageBytes >> 20} physical_x=${(space.physicalBytes / opts.imageBytes).toFixed(3)} ` +
      `blender_off_iops=${off.toFixed(0)} blender_on_iops=${on.toFixed(0)} iops_ratio=${off > 0 ? (on / off).toFixed(2) : 'n/a'}\n`,
  );
  return runs.every((r) => r.error === undefined);
}
