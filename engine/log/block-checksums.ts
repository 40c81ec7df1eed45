/**
 * The CRC of every data block on disk, per segment, so that each read from disk is verified
 * (a flipped bit in a segment must surface as an error, never as a VM's data).
 *
 * The CRCs live in the log itself (each record's meta area, see format.ts); this is a bounded
 * in-memory cache of them, one table per segment (4 bytes per block: 64 KiB for a 64 MiB
 * segment). The writer fills the tables of the segments it writes; a segment whose table is
 * not in memory (after a restart, or evicted) is loaded by walking its record headers once.
 */
import { BLOCK_SIZE } from '../block-device.ts';
import { EngineError } from '../errors.ts';
import type { Batch } from './batch.ts';
import { blockCrc } from './format.ts';

const UNKNOWN = 0;
const KNOWN = 1;
/** Written by a version 1 record: there is no per-block CRC to check against. */
const UNVERIFIABLE = 2;

interface SegmentTable {
  crc: Uint32Array;
  state: Uint8Array;
  loaded: Promise<void> | undefined;
}

export interface BlockChecksumsOptions {
  blocksPerSegment: number;
  /** Tables kept in memory; the least recently used beyond this are dropped. */
  maxSegments: number;
  /** Reads a segment's record headers and reports each block's CRC to `sink`. */
  load: (segmentNo: number, sink: ChecksumSink) => Promise<void>;
}

export interface ChecksumSink {
  crc(pbn: number, crc: number): void;
  unverifiable(pbn: number, count: number): void;
}

export class BlockChecksums {
  readonly #blocksPerSegment: number;
  readonly #maxSegments: number;
  readonly #load: BlockChecksumsOptions['load'];
  /** Insertion order is recency order (a hit re-inserts). */
  readonly #tables = new Map<number, SegmentTable>();
  /** Blocks that failed verification since the pool opened (for stats and logs). */
  failures = 0;

  constructor(opts: BlockChecksumsOptions) {
    this.#blocksPerSegment = opts.blocksPerSegment;
    this.#maxSegments = Math.max(2, opts.maxSegments);
    this.#load = opts.load;
  }

  /** Records the CRCs of a batch that just reached the disk. */
  recordBatch(batch: Batch): void {
    if (batch.dataBlocks === 0) return;
    // A batch at offset 0 starts its segment, so the table it begins is complete; otherwise
    // only a table already in memory is updated (a missing one is loaded from disk on demand).
    const table = this.#tables.get(batch.segmentNo) ?? (batch.offsetInSegment === 0 ? this.#newTable(batch.segmentNo, undefined) : undefined);
    if (!table) return;
    const first = batch.firstPbn - batch.segmentNo * this.#blocksPerSegment;
    for (let i = 0; i < batch.dataBlocks; i++) {
      table.crc[first + i] = batch.blockCrcAt(i);
      table.state[first + i] = KNOWN;
    }
  }

  /** Drops a deleted segment's table: its number may be reused for new data. */
  forget(segmentNo: number): void {
    this.#tables.delete(segmentNo);
  }

  /**
   * Checks `count` whole blocks read from disk into buf[offset..], the first at pbn; throws
   * CORRUPTION on a mismatch. The blocks never cross a segment boundary.
   */
  async verify(firstPbn: number, count: number, buf: Buffer, offset: number): Promise<void> {
    const segmentNo = Math.floor(firstPbn / this.#blocksPerSegment);
    const table = await this.#table(segmentNo);
    const first = firstPbn - segmentNo * this.#blocksPerSegment;
    for (let i = 0; i < count; i++) {
      const state = table.state[first + i];
      if (state === UNVERIFIABLE) continue;
      if (state === KNOWN && blockCrc(buf, offset + i * BLOCK_SIZE) === table.crc[first + i]) continue;
      this.failures++;
      const why = state === UNKNOWN ? 'has no valid log record' : 'failed its checksum';
      throw new EngineError('CORRUPTION', `block ${firstPbn + i} (segment ${segmentNo}) ${why}: the data on disk is damaged`);
    }
  }

  async #table(segmentNo: number): Promise<SegmentTable> {
    let table = this.#tables.get(segmentNo);
    if (table) {
      this.#tables.delete(segmentNo);
      this.#tables.set(segmentNo, table);
    } else {
      table = this.#newTable(segmentNo, undefined);
      const t = table;
      t.loaded = this.#load(segmentNo, {
        crc: (pbn, crc) => {
          const i = pbn - segmentNo * this.#blocksPerSegment;
          // The writer's value (set while the load ran) is the same; do not downgrade its state.
          t.crc[i] = crc;
          t.state[i] = KNOWN;
        },
        unverifiable: (pbn, count) => {
          const i = pbn - segmentNo * this.#blocksPerSegment;
          t.state.fill(UNVERIFIABLE, i, i + count);
        },
      }).catch((err: unknown) => {
        if (this.#tables.get(segmentNo) === t) this.#tables.delete(segmentNo);
        throw err;
      });
    }
    if (table.loaded) await table.loaded;
    return table;
  }

  #newTable(segmentNo: number, loaded: Promise<void> | undefined): SegmentTable {
    const table: SegmentTable = { crc: new Uint32Array(this.#blocksPerSegment), state: new Uint8Array(this.#blocksPerSegment), loaded };
    this.#tables.set(segmentNo, table);
    while (this.#tables.size > this.#maxSegments) {
      const oldest = this.#tables.keys().next().value as number;
      this.#tables.delete(oldest);
    }
    return table;
  }
}
