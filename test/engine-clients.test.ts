/**
 * Real NBD clients against a real engine: qemu-img, qemu-io, nbdinfo, nbdcopy and fio, each
 * started as its own process on the unix socket, exactly as a user would run them. Every check
 * compares what a client reads back with what a (different) client process wrote.
 */
import { randomBytes } from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, expect } from 'vitest';
import { GiB, KiB, MiB, makeTempDir, qemuIo, runOk, sha256File, useEngine } from './harness.ts';
import { NbdClient, listExports } from './lib/nbd-client.ts';

const engine = useEngine();

interface MapExtent {
  offset: number;
  length: number;
  type: number;
  description: string;
}

async function nbdinfoMap(uri: string): Promise<MapExtent[]> {
  const r = await runOk('nbdinfo', ['--map', '--json', uri]);
  return JSON.parse(r.stdout) as MapExtent[];
}

/** The map's type at each byte of [offset, offset+length): throws if it is not one value. */
function typeOver(map: readonly MapExtent[], offset: number, length: number): number {
  const types = new Set<number>();
  for (const e of map) {
    if (e.offset < offset + length && e.offset + e.length > offset) types.add(e.type);
  }
  if (types.size !== 1) throw new Error(`[${offset}, +${length}) has types ${[...types].join(',')} in ${JSON.stringify(map)}`);
  return [...types][0]!;
}

/** The extents must tile [0, size) without gaps or overlaps. */
function expectTiles(map: readonly MapExtent[], size: number): void {
  let at = 0;
  for (const e of map) {
    expect(e.offset).toBe(at);
    expect(e.length).toBeGreaterThan(0);
    at += e.length;
  }
  expect(at).toBe(size);
}

/** One qemu-io `write -P` and what the volume must hold afterwards (later writes win). */
interface PatternWrite {
  pattern: number;
  offset: number;
  length: number;
}

/**
 * The expected content as runs of one byte value over [lo, hi), for `read -P` checks: gaps
 * between writes are expected to be zero.
 */
function expectedRuns(writes: readonly PatternWrite[], lo: number, hi: number): PatternWrite[] {
  const cuts = new Set<number>([lo, hi]);
  for (const w of writes) {
    for (const x of [w.offset, w.offset + w.length]) if (x > lo && x < hi) cuts.add(x);
  }
  const points = [...cuts].sort((a, b) => a - b);
  const runs: PatternWrite[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const start = points[i]!;
    const end = points[i + 1]!;
    let pattern = 0;
    for (const w of writes) if (w.offset <= start && w.offset + w.length >= end) pattern = w.pattern;
    const last = runs[runs.length - 1];
    if (last && last.pattern === pattern && last.offset + last.length === start) last.length += end - start;
    else runs.push({ pattern, offset: start, length: end - start });
  }
  return runs;
}

describe('real NBD clients', () => {
  it('qemu-img info reports the volume size as the virtual size', async () => {
    await engine().createVolume('info1', '1G');
    await engine().createVolume('info2', '100M');
    const one = JSON.parse((await runOk('qemu-img', ['info', '--output=json', engine().uri('info1')])).stdout) as Record<string, unknown>;
    expect(one['virtual-size']).toBe(GiB);
    const two = JSON.parse((await runOk('qemu-img', ['info', '--output=json', engine().uri('info2')])).stdout) as Record<string, unknown>;
    expect(two['virtual-size']).toBe(100 * MiB);
  });

  it('qemu-io patterns at aligned, unaligned, overlapping and end-of-volume offsets read back in another process', async () => {
    const size = GiB;
    await engine().createVolume('vm1', '1G');
    const uri = engine().uri('vm1');
    const writes: PatternWrite[] = [
      { pattern: 0xab, offset: 0, length: MiB },
      { pattern: 0x11, offset: 1000, length: 3000 }, // inside the first write, unaligned
      { pattern: 0x22, offset: 4095, length: 2 }, // straddles a 4 KiB boundary
      { pattern: 0x33, offset: MiB + 512, length: 512 }, // sub-block into a never-written block
      { pattern: 0x44, offset: 3 * MiB - 1, length: 4097 },
      { pattern: 0x55, offset: 5 * MiB, length: 64 * KiB },
      { pattern: 0x66, offset: 100 * MiB + 12345, length: 200_000 },
      { pattern: 0xcd, offset: 512 * MiB, length: 8 * MiB },
      { pattern: 0xef, offset: 600 * MiB + 4096, length: 33 * MiB }, // more than one 32 MiB request
      { pattern: 0x5a, offset: 600 * MiB + 10 * MiB + 7, length: 9 }, // overwrite inside the big one
      { pattern: 0x99, offset: size - 10_000, length: 5000 },
      { pattern: 0x77, offset: size - 4096, length: 4096 }, // last block
      { pattern: 0x88, offset: size - 1, length: 1 }, // last byte
    ];
    await qemuIo(uri, [...writes.map((w) => `write -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`), 'flush']);

    // Read back in a fresh process: every written run, and the zeros around them.
    const windows: [number, number][] = [
      [0, 6 * MiB],
      [99 * MiB, 101 * MiB],
      [511 * MiB, 521 * MiB],
      [599 * MiB, 635 * MiB],
      [size - 2 * MiB, size],
    ];
    const reads: string[] = [];
    for (const [lo, hi] of windows) {
      for (const run of expectedRuns(writes, lo, hi)) reads.push(`read -P 0x${run.pattern.toString(16)} ${run.offset} ${run.length}`);
    }
    const r = await qemuIo(uri, reads);
    // Each read prints one "read N/N bytes" line; none may be missing.
    expect(r.stdout.match(/^read \d+\/\d+ bytes/gm)?.length).toBe(reads.length);

    // A deliberately wrong pattern must be reported: proves the check above can fail.
    await expect(qemuIo(uri, ['read -P 0x12 1000 3000'])).rejects.toThrow(/Pattern verification failed/);
  });

  it('nbdinfo --map shows holes for unwritten and trimmed ranges and data for written ones', async () => {
    const size = 64 * MiB;
    await engine().createVolume('map1', '64M');
    const uri = engine().uri('map1');
    expect(typeOver(await nbdinfoMap(uri), 0, size)).toBe(3);

    await qemuIo(uri, ['write -P 0x42 0 2M', 'write -P 0x43 8M 1M', 'write -P 0x44 63M 1M', 'flush']);
    await qemuIo(uri, ['discard 1M 1M', 'discard 63M 1M', 'flush']);
    const map = await nbdinfoMap(uri);
    expectTiles(map, size);
    expect(typeOver(map, 0, MiB)).toBe(0); // written
    expect(typeOver(map, MiB, MiB)).toBe(3); // trimmed
    expect(typeOver(map, 2 * MiB, 6 * MiB)).toBe(3); // never written
    expect(typeOver(map, 8 * MiB, MiB)).toBe(0); // written
    expect(typeOver(map, 9 * MiB, 54 * MiB)).toBe(3); // never written
    expect(typeOver(map, 63 * MiB, MiB)).toBe(3); // trimmed at the very end
    // Trimmed ranges read as zeros, the rest is untouched.
    await qemuIo(uri, ['read -P 0x42 0 1M', 'read -P 0 1M 1M', 'read -P 0x43 8M 1M', 'read -P 0 63M 1M']);
  });

  it('nbdinfo --list (and NBD_OPT_LIST) lists the volumes', async () => {
    await engine().createVolume('list-a', '16M');
    await engine().createVolume('list-b', '32M');
    const r = await runOk('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${engine().nbdSocket}`]);
    const parsed = JSON.parse(r.stdout) as { exports: { 'export-name': string; 'export-size': number }[] };
    const sizes = new Map(parsed.exports.map((e) => [e['export-name'], e['export-size']]));
    expect(sizes.get('list-a')).toBe(16 * MiB);
    expect(sizes.get('list-b')).toBe(32 * MiB);
    const names = await listExports(engine().nbdSocket);
    expect(names).toEqual(expect.arrayContaining(['list-a', 'list-b']));
    const ls = (await engine().listVolumes()).map((v) => v.name);
    expect(new Set(names)).toEqual(new Set(ls));
  });

  it('nbdcopy round-trips 256 MiB of random data', async () => {
    const size = 256 * MiB;
    await engine().createVolume('copy1', '256M');
    const dir = await makeTempDir('braid-copy-');
    const input = join(dir, 'in.bin');
    const output = join(dir, 'out.bin');
    const chunks: Buffer[] = [];
    for (let i = 0; i < size / (16 * MiB); i++) chunks.push(randomBytes(16 * MiB));
    await writeFile(input, chunks);
    chunks.length = 0;
    const uri = engine().uri('copy1');
    await runOk('nbdcopy', ['--flush', input, uri], { timeoutMs: 240_000 });
    await runOk('nbdcopy', [uri, output], { timeoutMs: 240_000 });
    expect(await sha256File(output)).toBe(await sha256File(input));

    // An independent reader agrees on a few spots (the raw client, not libnbd).
    const client = await NbdClient.connect(engine().nbdSocket, 'copy1');
    try {
      expect(client.info.sizeBytes).toBe(size);
      const fh = await open(input, 'r');
      try {
        for (const at of [0, 4096 * 777 + 13, size - 65536]) {
          const want = Buffer.alloc(65536);
          await fh.read(want, 0, want.length, at);
          expect((await client.read(at, want.length)).equals(want)).toBe(true);
        }
      } finally {
        await fh.close();
      }
    } finally {
      await client.disconnect();
    }
  });

  it('fio verifies crc32c with 8 jobs on 8 volumes, and stats report the coalescing figures', async () => {
    const jobs = 8;
    const args = [
      '--output-format=json',
      '--name=global',
      '--ioengine=nbd',
      '--rw=randwrite',
      '--bs=4k',
      '--size=64M',
      '--iodepth=8',
      '--verify=crc32c',
      '--do_verify=1',
      '--verify_fatal=1',
      '--fsync=8',
      // fio would otherwise leave local-jobN-verify.state files in its working directory.
      '--verify_state_save=0',
    ];
    for (let i = 0; i < jobs; i++) {
      await engine().createVolume(`fio${i}`, '64M');
      args.push(`--name=job${i}`, `--uri=${engine().uri(`fio${i}`)}`);
    }
    const r = await runOk('fio', args, { timeoutMs: 280_000 });
    expect(r.stderr).not.toMatch(/verify|bad magic|crc32c|error/i);
    const out = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as {
      jobs: { jobname: string; error: number; read: { io_bytes: number }; write: { io_bytes: number } }[];
    };
    expect(out.jobs).toHaveLength(jobs);
    for (const job of out.jobs) {
      expect(job.error, job.jobname).toBe(0);
      expect(job.write.io_bytes, job.jobname).toBe(64 * MiB);
      expect(job.read.io_bytes, `${job.jobname} verify read`).toBe(64 * MiB);
    }

    const stats = await engine().stats();
    console.log(`engine-clients: stats after fio: ${JSON.stringify(stats)}`);
    for (const key of ['logicalBytes', 'physicalBytes', 'writesPerBatch', 'flushesPerFdatasync']) {
      expect(typeof stats[key], key).toBe('number');
    }
    expect(stats['writesPerBatch'] as number).toBeGreaterThanOrEqual(1);
    expect(stats['flushesPerFdatasync'] as number).toBeGreaterThan(0);
    // Every fio volume is fully written, so at least 8 × 64 MiB are mapped.
    expect(stats['logicalBytes'] as number).toBeGreaterThanOrEqual(jobs * 64 * MiB);
    expect(engine().errorLogLines(), 'internal errors in the engine log').toEqual([]);
  });
});
