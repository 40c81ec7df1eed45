import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NBD_CMD_TRIM, NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES } from '../../../engine/nbd/protocol.ts';
import { ENTRY_OVERHEAD_BYTES, ReplayLog, replayWaves } from './replay-log.ts';
import type { Mutation } from './replay-log.ts';

describe('ReplayLog', () => {
  it('keeps acknowledged mutations in order and counts their bytes', () => {
    const log = new ReplayLog();
    log.record(NBD_CMD_WRITE, 0, 4096, Buffer.alloc(4096));
    log.record(NBD_CMD_TRIM, 8192, 4096, undefined);
    expect(log.size).toBe(2);
    expect(log.bytes).toBe(4096 + 2 * ENTRY_OVERHEAD_BYTES);
    expect(log.entries().map((e) => [e.seq, e.command])).toEqual([
      [0, NBD_CMD_WRITE],
      [1, NBD_CMD_TRIM],
    ]);
  });

  it('a flush releases exactly what was acknowledged before it was sent, even when flushes complete out of order', () => {
    const log = new ReplayLog();
    log.record(NBD_CMD_WRITE, 0, 1, Buffer.alloc(1));
    const first = log.mark; // a FLUSH sent now covers seq 0
    log.record(NBD_CMD_WRITE, 1, 1, Buffer.alloc(1));
    log.record(NBD_CMD_WRITE, 2, 1, Buffer.alloc(1));
    const second = log.mark; // covers 0..2
    log.record(NBD_CMD_WRITE, 3, 1, Buffer.alloc(1));
    log.release(second);
    expect(log.entries().map((e) => e.offset)).toEqual([3]);
    log.release(first); // the older flush answered last: nothing more to drop
    expect(log.entries().map((e) => e.offset)).toEqual([3]);
    expect(log.bytes).toBe(1 + ENTRY_OVERHEAD_BYTES);
    log.release(log.mark);
    expect(log.size).toBe(0);
    expect(log.bytes).toBe(0);
    expect(() => log.release(log.mark + 1)).toThrow();
  });

  it('stays correct over many records and releases (front compaction)', () => {
    const log = new ReplayLog();
    for (let i = 0; i < 5000; i++) {
      log.record(NBD_CMD_WRITE_ZEROES, i, 1, undefined);
      if (i % 7 === 0) log.release(log.mark - 3 > 0 ? log.mark - 3 : 0);
    }
    const seqs = log.entries().map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(log.bytes).toBe(log.size * ENTRY_OVERHEAD_BYTES);
  });
});

describe('replayWaves', () => {
  const m = (seq: number, offset: number, length: number): Mutation => ({ seq, command: NBD_CMD_WRITE, offset, length, data: undefined });

  it('starts a new wave at the first overlap, and at the size limit', () => {
    const waves = replayWaves([m(0, 0, 10), m(1, 10, 10), m(2, 5, 1), m(3, 100, 1)], 3);
    expect(waves.map((w) => w.map((e) => e.seq))).toEqual([[0, 1], [2, 3]]);
    expect(replayWaves([m(0, 0, 1), m(1, 1, 1), m(2, 2, 1)], 2).map((w) => w.length)).toEqual([2, 1]);
    expect(replayWaves([])).toEqual([]);
  });

  it('applied wave by wave, in any order within each wave, gives what applying in order gives', () => {
    const entry = fc.record({ offset: fc.integer({ min: 0, max: 60 }), length: fc.integer({ min: 1, max: 8 }) });
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 40 }), fc.integer({ min: 1, max: 6 }), fc.nat(), (raw, limit, seed) => {
        const entries = raw.map((e, i) => m(i, e.offset, e.length));
        const inOrder = new Array<number>(70).fill(-1);
        for (const e of entries) inOrder.fill(e.seq, e.offset, e.offset + e.length);
        const waved = new Array<number>(70).fill(-1);
        let s = seed;
        for (const wave of replayWaves(entries, limit)) {
          expect(wave.length).toBeLessThanOrEqual(limit);
          const shuffled = [...wave].sort(() => ((s = (s * 1103515245 + 12345) % 2 ** 31) % 3) - 1);
          for (const e of shuffled) waved.fill(e.seq, e.offset, e.offset + e.length);
        }
        expect(waved).toEqual(inOrder);
        expect(replayWaves(entries, limit).flat().map((e) => e.seq)).toEqual(entries.map((e) => e.seq));
      }),
    );
  });
});
