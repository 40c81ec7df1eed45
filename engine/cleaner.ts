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
 * Blocks shared by dedup references (REF) can be pointed at by any layer at any LBA. When
 * references remain after the record-driven copy, the cleaner finds them by scanning every
 * layer's index for pbns in the segment and points them at the copy (one copy per block, so
 * sharing survives cleaning). Dedup stops handing out the segment's blocks before any of this.
 *
 * Every block copied is first checked against its CRC: a damaged live block is never laundered
 * into a fresh copy with a valid checksum; its segment is left alone and reported.
 *
 * Victims are chosen by cost-benefit (Rosenblum and Ousterhout's LFS rule): the space a
 * segment gives back, (1 − u), weighed by how long its data has stayed put (age), over the cost
 * of reading it and rewriting its live part, (1 + u). Old, cold segments are cleaned before
 * they are quite as empty as hot ones, whose remaining blocks are likely to die on their own.
 * Segments the writer is filling or about to fill are never touched.
 */
import { BLOCK_SIZE } from './block-device.ts';
import type { Catalog } from './catalog.ts';
import type { DedupIndex } from './dedup-index.ts';
import { EngineError, isEngineError } from './errors.ts';
import { LBA_LIMIT } from './index/block-map.ts';
import { pendingSeq, type Layer } from './layer.ts';
import type { Logger } from './logger.ts';
import type { BlockChecksums } from './log/block-checksums.ts';
import { HEADER_BYTES, OP_WRITE, blockCrc, recordBytes } from './log/format.ts';
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
  checksums: BlockChecksums;
  dedup: DedupIndex;
  poolId: number;
  segmentBytes: number;
  logger: Logger;
  segments: () => Iterable<number>;
  /** Log seq of the last record written to a segment (undefined: before this start: oldest). */
  lastSeqOf: (segmentNo: number) => number | undefined;
  /** The seq the next record will get: "now" for ages. */
  nextSeq: () => number;
  /** Makes a checkpoint of the index as it is now durable. */
  checkpoint: () => Promise<void>;
  deleteSegment: (segmentNo: number) => Promise<void>;
}

export interface CleanerCounters {
  segmentsCleaned: number;
  blocksRelocated: number;
  /** Segments left alone because a block was still referenced after the copy (retried later). */
  segmentsDeferred: number;
  /** Segments left alone for good because a live block in them failed its checksum. */
  segmentsDamaged: number;
}

export class Cleaner {
  readonly #deps: CleanerDeps;
  readonly #blocksPerSegment: number;
  readonly counters: CleanerCounters = { segmentsCleaned: 0, blocksRelocated: 0, segmentsDeferred: 0, segmentsDamaged: 0 };
  #header = Buffer.alloc(HEADER_BYTES);
  #data = Buffer.allocUnsafe(MAX_BATCH_DATA_BYTES);
  /** Old pbn → its copy, during one segment's cleaning: later references reuse the copy. */
  readonly #moved = new Map<number, number>();
  /** Segments with a damaged live block: never victims again (until restart). */
  readonly #damaged = new Set<number>();

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
    return new Set([...this.#deps.segments()].filter((n) => !busy.has(n) && !this.#damaged.has(n)));
  }

  /** The candidate with the best cost-benefit score among those below the live threshold. */
  pickVictim(candidates: ReadonlySet<number>): number | undefined {
    const { writer, usage, lastSeqOf, nextSeq } = this.#deps;
    const busy = writer.busySegments();
    const now = nextSeq();
    let best: number | undefined;
    let bestScore = -1;
    for (const n of candidates) {
      if (busy.has(n)) continue;
      const u = usage.live(n) / this.#blocksPerSegment;
      if (u > MAX_VICTIM_LIVE_FRACTION) continue;
      const age = now - (lastSeqOf(n) ?? 0) + 1;
      const score = ((1 - u) * age) / (1 + u);
      if (score > bestScore) {
        best = n;
        bestScore = score;
      }
    }
    return best;
  }

  /** Cleans one segment; false when it had to be left for later. */
  async clean(segmentNo: number): Promise<boolean> {
    const { dedup } = this.#deps;
    dedup.closeSegment(segmentNo);
    this.#moved.clear();
    try {
      if (await this.#cleanClosed(segmentNo)) return true;
    } catch (err) {
      if (!isEngineError(err) || err.code !== 'CORRUPTION') throw err;
      this.#damaged.add(segmentNo);
      this.counters.segmentsDamaged++;
      this.#deps.logger.error({ segment: segmentNo, err: err.message }, 'segment has a damaged live block: not cleaned; reads of that block fail');
    } finally {
      this.#moved.clear();
    }
    dedup.reopenSegment(segmentNo);
    return false;
  }

  async #cleanClosed(segmentNo: number): Promise<boolean> {
    const { writer, usage, logger } = this.#deps;
    const before = this.counters.blocksRelocated;
    await this.#relocateLive(segmentNo);
    await writer.flush(0);
    if (usage.live(segmentNo) > 0) {
      // References the records do not lead to: dedup REFs from other layers or LBAs.
      await this.#relocateReferenced(segmentNo);
      await writer.flush(0);
    }
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
      const rec = await readRecord(file, pos, { ...this.#deps, verifyData: false }, this.#header, this.#data);
      if (typeof rec === 'string') return;
      this.#relocateRecord(rec);
      pos.offsetInSegment += recordBytes(rec.header);
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
        const block = pbn + i - rec.firstPbn;
        const at = block * BLOCK_SIZE;
        const users = [own, ...flattened.filter((f) => f !== own)].filter((l) => l !== undefined && l.index.get(lba) === pbn + i) as Layer[];
        if (users.length === 0) continue;
        if (rec.blockCrcs && blockCrc(this.#data, at) !== rec.blockCrcs[block]) {
          throw new EngineError('CORRUPTION', `live block ${pbn + i} of segment ${Math.floor(rec.firstPbn / this.#blocksPerSegment)} failed its checksum`);
        }
        for (const l of users) this.#relocate(l, lba, pbn + i, this.#data, at);
      }
      pbn += e.count;
    }
  }

  /**
   * Scans every layer's index for pbns in the segment and moves each referenced block once,
   * pointing all its referrers at the copy.
   */
  async #relocateReferenced(segmentNo: number): Promise<void> {
    const { catalog, writer, checksums } = this.#deps;
    const first = segmentNo * this.#blocksPerSegment;
    const end = first + this.#blocksPerSegment;
    const referrers = new Map<number, Array<{ layer: Layer; lba: number }>>();
    for (const layer of catalog.layers.values()) {
      layer.index.forEach(0, LBA_LIMIT, (lba, v) => {
        if (v < first || v >= end) return;
        let list = referrers.get(v);
        if (!list) referrers.set(v, (list = []));
        list.push({ layer, lba });
      });
    }
    const file = await writer.segmentFile(segmentNo);
    const block = Buffer.allocUnsafe(BLOCK_SIZE);
    for (const [pbn, list] of referrers) {
      if (!this.#moved.has(pbn)) {
        const n = await file.read(block, 0, BLOCK_SIZE, (pbn - first) * BLOCK_SIZE);
        if (n !== BLOCK_SIZE) throw new EngineError('IO_ERROR', `short read of segment ${segmentNo}`);
        await checksums.verify(pbn, 1, block, 0);
      }
      // Synchronous from here: the checks and the appends see one state.
      for (const { layer, lba } of list) if (layer.index.get(lba) === pbn) this.#relocate(layer, lba, pbn, block, 0);
      if (writer.isBackedUp) await writer.waitForRoom();
    }
  }

  /** Points (layer, lba) away from pbn: at the block's copy if one was made, else at a new copy. */
  #relocate(layer: Layer, lba: number, pbn: number, data: Buffer, dataOffset: number): void {
    if (layer.pendingBlocks.has(lba) || layer.pendingRefs.has(lba)) return; // a newer write is on its way
    for (const r of layer.pendingRanges) if (lba >= r.lba && lba < r.lba + r.count) return;
    const writer = this.#deps.writer;
    const copy = this.#moved.get(pbn);
    let batch = writer.openBatch();
    if (copy !== undefined) {
      if (!batch.appendRef(layer.id, lba, copy)) {
        writer.sealOpenBatch();
        batch = writer.openBatch();
        batch.appendRef(layer.id, lba, copy);
      }
      const targetBatch = writer.batchHolding(copy);
      layer.pendingRefs.set(lba, { lba, count: 1, value: copy, order: batch.nextPbn, seq: pendingSeq(), batch, targetBatch });
      return;
    }
    if (batch.appendData(layer.id, lba, data, dataOffset, 1) === 0) {
      writer.sealOpenBatch();
      batch = writer.openBatch();
      batch.appendData(layer.id, lba, data, dataOffset, 1);
    }
    const newPbn = batch.firstPbn + batch.dataBlocks - 1;
    layer.addPendingWrite(lba, 1, newPbn);
    this.#moved.set(pbn, newPbn);
    this.counters.blocksRelocated++;
  }
}
