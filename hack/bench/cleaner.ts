// Space reclamation (issue "no-dupe clones ... space reclamation"): a volume overwritten at
// random three times leaves about three quarters of its log dead. The cleaner runs in the
// background while the writes go on; this reports the foreground write latency while it
// works, and how fast physical bytes come back to ≤ 1.3x logical once the writes stop.
//
// Writes are 64 KiB at random offsets without fio's random map, so segments end up partly
// live (the cleaner must copy live blocks, not only drop empty segments).

import { join } from 'node:path';
import { EngineClient } from '../../engine/api/client.ts';
import { type BenchContext, progress } from './context.ts';
import { runFio } from './fio.ts';
import { startSystem } from './systems.ts';
import { fixed } from './table.ts';

export interface CleanerOptions {
  sizeBytes: number;
  idleSeconds: number;
}

const TARGET_RATIO = 1.3;
const FIO_TIMEOUT_MS = 60 * 60_000;

export async function cleaner(ctx: BenchContext, opts: CleanerOptions): Promise<boolean> {
  const dir = join(ctx.scratchDir, 'engine');
  const system = await startSystem({ kind: 'engine', dir, vms: [], volumeSizeBytes: opts.sizeBytes, repoDir: ctx.repoDir, perFileCache: ctx.perFileCache }, false);
  const client = EngineClient.connect(join(dir, 'braid', 'engine.sock'));
  try {
    await client.createVolume('vm', opts.sizeBytes);
    const uri = `nbd+unix:///vm?socket=${join(dir, 'braid', 'nbd.sock')}`;
    progress('cleaner: filling the volume once, sequentially');
    await runFio(join(dir, 'fill.fio'), { ioengine: 'nbd', rw: 'write', bs: '1M', iodepth: 4, size: opts.sizeBytes, end_fsync: 1, thread: 1 }, [{ name: 'fill', options: { uri } }], FIO_TIMEOUT_MS);
    progress('cleaner: overwriting it at random three times (cleaner running)');
    const overwrite = { ioengine: 'nbd', rw: 'randwrite', bs: '64k', iodepth: 8, size: opts.sizeBytes, io_size: 3 * opts.sizeBytes, norandommap: 1, randrepeat: 0, end_fsync: 1, thread: 1 };
    const { result } = await runFio(join(dir, 'overwrite.fio'), overwrite, [{ name: 'overwrite', options: { uri } }], FIO_TIMEOUT_MS);
    const atEnd = await client.stats();
    const ratioAtEnd = atEnd.physicalBytes / Math.max(1, atEnd.logicalBytes);
    progress(`cleaner: idle for up to ${opts.idleSeconds} s`);
    const started = performance.now();
    let stats = atEnd;
    let reachedS: number | undefined;
    while (performance.now() - started < opts.idleSeconds * 1000) {
      stats = await client.stats();
      if (stats.physicalBytes <= TARGET_RATIO * stats.logicalBytes) {
        reachedS = (performance.now() - started) / 1000;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const ratioAfter = stats.physicalBytes / Math.max(1, stats.logicalBytes);
    const p99 = result.write.clat?.p99Us;
    process.stdout.write(
      `overwrite: ${fixed(result.write.iops, 0)} IOPS of 64 KiB, write p50 ${fixed(result.write.clat?.p50Us, 0)} µs, p99 ${fixed(p99, 0)} µs while cleaning\n` +
        `physical/logical: ${ratioAtEnd.toFixed(2)} when the writes stopped, ${ratioAfter.toFixed(2)} ${reachedS === undefined ? `after ${opts.idleSeconds} s idle (target not reached)` : `after ${reachedS.toFixed(1)} s idle`}\n` +
        `cleaner: ${stats.segmentsCleaned} segments freed, ${stats.blocksRelocated} blocks moved\n`,
    );
    process.stdout.write(
      `cleaner size_gib=${opts.sizeBytes / 2 ** 30} ratio_at_end=${ratioAtEnd.toFixed(2)} ratio_after_idle=${ratioAfter.toFixed(2)} ` +
        `seconds_to_${TARGET_RATIO}=${reachedS === undefined ? 'none' : reachedS.toFixed(1)} write_p99_us=${fixed(p99, 0)}\n`,
    );
    return reachedS !== undefined;
  } finally {
    client.close();
    await system.stop();
  }
}
