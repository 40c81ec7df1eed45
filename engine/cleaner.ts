/**
 * The segment cleaner: gives back the space of overwritten, trimmed and deleted data.
 *
 * A segment is worth cleaning when few of its blocks are still referenced (SegmentUsage). The
 * cleaner reads the segment's records, and for every block some layer's index still points at,
 * appends a copy to the head of the log as an ordinary write of that layer — unless the layer
 * has a newer write or trim of that block in flight, which must win (it is ordered after by
 * pbn, and would be overridden by a later copy). Then, in this order:
 *
 *   1. flush the log        the copies are durable
 *   2. check the segment    no index entry points into it any more (else retry later)
 *   3. checkpoint           recovery will never replay a record of this segment again
 *   4. delete the segment   only now: "freed blocks are reused only after the next durable
 *                           checkpoint" (TigerBeetle's rule)
 *
 * Victims are chosen greedily (fewest live blocks first); segments the writer is filling or
 * about to fill are never touched.
 */
import { BLOCK_SIZE } from './block-device.ts';
import type { Catalog } from './catalog.ts';
import type { Layer } from './layer.ts';
import type { Logger } from './logger.ts';
import { HEADER_BYTES, OP_WRITE } from './log/format.ts';
import { readRecord, type ScannedRecord } from './log/log-scanner.ts';
import type { LogWriter } from './log/log-writer.ts';
import { MAX_BATCH_DATA_BYTES } from './log/log-writer.ts';
import type { SegmentUsage } from './segment-usage.ts';

/** Segments fuller than this are not worth moving. */
const MAX_VICTIM_LIVE_FRACTION = 0.8;

export interface CleanerDeps {
  writer: LogWriter;
  catalog: Catalog;
  usage: SegmentUsage;
  poolId: number;
  segmentBytes: number;
  logger: Logger;
  segments: () => Iterable<number>;
  /** Makes a checkpoint of the index as it is now durable. */
  checkpoint: () => Promise<void>;
  deleteSegment: (segmentNo: number) => Promise<void>;
}

export interface CleanerCounters {
  segmentsCleaned: number;
  blocksRelocated: number;
  /** Segments left alone because a block was still referenced after the copy (retried later). */
  segmentsDeferred: number;
}

export class Cleaner {
  readonly #deps: CleanerDeps;
  readonly #blocksPerSegment: number;
  readonly counters: CleanerCounters = { segmentsCleaned: 0, blocksRelocated: 0, segmentsDeferred: 0 };
  #header = Buffer.alloc(HEADER_BYTES);
  #data = Buffer.allocUnsafe(MAX_BATCH_DATA_BYTES);

  constructor(deps: CleanerDeps) {
    this.#deps = deps;
    this.#blocksPerSegment = deps.segmentBytes / BLOCK_SIZE;
  }

  /**
   * The segments a cleaning pass may take: those sealed now. Segments the pass itself fills
   * with copies are not among them, so a pass cannot chase its own tail.
   */
  candidates(): Set<number> {
    const busy = this.#deps.writer.busySegments();
    return new Set([...this.#deps.segments()].filter((n) => !busy.has(n)));
  }

  /** The candidate with the fewest live blocks, if any is below the threshold. */
  pickVictim(candidates: ReadonlySet<number>): number | undefined {
    const busy = this.#deps.writer.busySegments();
    let best: number | undefined;
    let bestLive = Math.floor(this.#blocksPerSegment * MAX_VICTIM_LIVE_FRACTION);
    for (const n of candidates) {
      if (busy.has(n)) continue;
      const live = this.#deps.usage.live(n);
      if (live < bestLive || (live === bestLive && best === undefined)) {
        best = n;
        bestLive = live;
      }
    }
    return best;
  }

  /** Cleans one segment; false when it had to be left for later. */
  async clean(segmentNo: number): Promise<boolean> {
    const { writer, usage, logger } = this.#deps;
    const before = this.counters.blocksRelocated;
    await this.#relocateLive(segmentNo);
    await writer.flush(0);
    if (usage.live(segmentNo) > 0) {
      this.counters.segmentsDeferred++;
      logger.debug({ segment: segmentNo, live: usage.live(segmentNo) }, 'segment still referenced after copying; retrying later');
      return false;
    }
    await this.#deps.checkpoint();
    if (usage.live(segmentNo) > 0) return false;
    await this.#deps.deleteSegment(segmentNo);
    this.counters.segmentsCleaned++;
    logger.info({ segment: segmentNo, relocatedBlocks: this.counters.blocksRelocated - before }, 'segment cleaned');
    return true;
  }

  async #relocateLive(segmentNo: number): Promise<void> {
    const { writer } = this.#deps;
    const file = await writer.segmentFile(segmentNo);
    const pos = { segmentNo, offsetInSegment: 0, nextSeq: -1 };
    for (;;) {
      const rec = await readRecord(file, pos, this.#deps, this.#header, this.#data);
      if (typeof rec === 'string') return;
      this.#relocateRecord(rec);
      pos.offsetInSegment += HEADER_BYTES + rec.header.dataBlocks * BLOCK_SIZE;
      pos.nextSeq = rec.header.seq + 1;
      if (writer.isBackedUp) await writer.waitForRoom();
      // Let foreground requests run between records: each copy step is short.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  /** Synchronous: checks and copies happen with no other request in between. */
  #relocateRecord(rec: ScannedRecord): void {
    const layers = this.#deps.catalog.layers;
    // Only the layer that wrote a block, and layers made by flattening, can point at it.
    const flattened = [...layers.values()].filter((l) => l.flattened);
    let pbn = rec.firstPbn;
    for (const e of rec.entries) {
      if (e.op !== OP_WRITE) continue;
      const own = layers.get(e.volumeId);
      for (let i = 0; i < e.count; i++) {
        const lba = e.lba + i;
        const at = (pbn + i - rec.firstPbn) * BLOCK_SIZE;
        if (own && own.index.get(lba) === pbn + i) this.#copyBlock(own, lba, at);
        for (const f of flattened) if (f !== own && f.index.get(lba) === pbn + i) this.#copyBlock(f, lba, at);
      }
      pbn += e.count;
    }
  }

  #copyBlock(layer: Layer, lba: number, dataOffset: number): void {
    if (layer.pendingBlocks.has(lba)) return; // a newer write is on its way
    for (const r of layer.pendingRanges) if (lba >= r.lba && lba < r.lba + r.count) return;
    const writer = this.#deps.writer;
    let batch = writer.openBatch();
    if (batch.appendData(layer.id, lba, this.#data, dataOffset, 1) === 0) {
      writer.sealOpenBatch();
      batch = writer.openBatch();
      batch.appendData(layer.id, lba, this.#data, dataOffset, 1);
    }
    layer.addPendingWrite(lba, 1, batch.firstPbn + batch.dataBlocks - 1);
    this.counters.blocksRelocated++;
  }
}
