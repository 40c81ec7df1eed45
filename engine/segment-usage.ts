/**
 * Live block references per log segment, for the cleaner: how many index entries (over all
 * layers) point into each segment. Kept exact incrementally — every index change goes through
 * Layer, which reports what it drops and what it adds — and rebuilt from the indexes at open.
 * A segment whose count is zero holds nothing anyone can read.
 */
import assert from 'node:assert/strict';
import { LBA_LIMIT, UNMAPPED, ZERO_MARK } from './index/block-map.ts';
import type { BlockMap } from './index/block-map.ts';

export function isPbn(value: number): boolean {
  return value !== UNMAPPED && value !== ZERO_MARK;
}

export class SegmentUsage {
  readonly #blocksPerSegment: number;
  readonly #live = new Map<number, number>();

  constructor(blocksPerSegment: number) {
    this.#blocksPerSegment = blocksPerSegment;
  }

  segmentOf(pbn: number): number {
    return Math.floor(pbn / this.#blocksPerSegment);
  }

  /** Counts `count` references to consecutive pbns (a run never crosses a segment). */
  add(pbn: number, count = 1): void {
    const seg = this.segmentOf(pbn);
    assert.ok(this.segmentOf(pbn + count - 1) === seg);
    this.#live.set(seg, (this.#live.get(seg) ?? 0) + count);
  }

  remove(pbn: number): void {
    const seg = this.segmentOf(pbn);
    const n = (this.#live.get(seg) ?? 0) - 1;
    assert.ok(n >= 0, `segment ${seg} live count went negative`);
    if (n === 0) this.#live.delete(seg);
    else this.#live.set(seg, n);
  }

  addMap(map: BlockMap): void {
    map.forEach(0, LBA_LIMIT, (_lba, v) => {
      if (isPbn(v)) this.add(v);
    });
  }

  removeMap(map: BlockMap): void {
    map.forEach(0, LBA_LIMIT, (_lba, v) => {
      if (isPbn(v)) this.remove(v);
    });
  }

  live(segmentNo: number): number {
    return this.#live.get(segmentNo) ?? 0;
  }

  totalLive(): number {
    let n = 0;
    for (const v of this.#live.values()) n += v;
    return n;
  }
}
