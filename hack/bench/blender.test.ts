import { describe, expect, it } from 'vitest';
import { type BlenderResult, blenderFioGlobal, blenderSummaryLine, blenderTable } from './blender.ts';

const engine: BlenderResult = { kind: 'engine', iops: 30123.4, cpuSecondsPer1000: 0.021, engineStats: { writesPerBatch: 40.5, flushesPerFdatasync: 38.25 } };
const perfile: BlenderResult = { kind: 'perfile', iops: 3658.2, cpuSecondsPer1000: 0.282 };
const nbdkit: BlenderResult = { kind: 'nbdkit', iops: 4436.6, cpuSecondsPer1000: 0.178 };

describe('blenderSummaryLine', () => {
  it('has the exact shape scripts parse', () => {
    expect(blenderSummaryLine(64, [engine, perfile, nbdkit])).toBe(
      'blender vms=64 engine_iops=30123 perfile_iops=3658 nbdkit_iops=4437 iops_ratio=8.23 cpu_ratio=0.07',
    );
  });

  it('says n/a for a system that failed, and for ratios that need it', () => {
    const failed: BlenderResult = { kind: 'engine', error: 'braid serve exited' };
    expect(blenderSummaryLine(8, [failed, perfile, nbdkit])).toBe(
      'blender vms=8 engine_iops=n/a perfile_iops=3658 nbdkit_iops=4437 iops_ratio=n/a cpu_ratio=n/a',
    );
  });
});

describe('blenderTable', () => {
  it('aligns columns and shows coalescing figures for the engine only', () => {
    const lines = blenderTable([engine, perfile]).split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^system +IOPS/);
    expect(lines[2]).toMatch(/38\.25 +40\.50$/);
    expect(lines[3]).toMatch(/n\/a +n\/a$/);
    // Right-aligned numeric columns end at the same position as their headers.
    expect(lines[2]?.indexOf('30123')! + 5).toBe(lines[0]?.indexOf('IOPS')! + 4);
  });
});

describe('blenderFioGlobal', () => {
  it('flushes after every 4 KiB random write at iodepth 1', () => {
    expect(blenderFioGlobal(15)).toMatchObject({ ioengine: 'nbd', rw: 'randwrite', bs: '4k', iodepth: 1, fsync: 1, time_based: 1, runtime: 15 });
  });
});
