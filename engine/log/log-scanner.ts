/**
 * Recovery's view of the log: walks records from a known position, verifies each (magic,
 * version, pool id, consecutive seq, header and data CRC) and hands the valid ones to the
 * caller. The first record that fails any check ends the log: after a crash the tail is torn
 * or unwritten, and everything after a gap in seq is unordered with respect to what was lost,
 * so it must not be applied. The scanner never throws on bad bytes; only I/O errors throw.
 *
 * A writer starts a new segment only when the current one is nearly full, so when a record
 * fails at some offset, the only other place the log can continue is offset 0 of another
 * segment (numbers are reused after cleaning, so any one; the next number is tried first),
 * with exactly the next seq. Seqs are never reused, so at most one segment can match.
 */
import { BLOCK_SIZE } from '../block-device.ts';
import type { StorageFile } from '../storage/storage.ts';
import { HEADER_BYTES, OP_TRIM, OP_WRITE, OP_ZERO, dataCrc, parseHeader, readEntry, type LogEntry, type RecordHeader } from './format.ts';
import type { LogPosition } from './log-writer.ts';
import { MAX_BATCH_DATA_BYTES } from './log-writer.ts';

export interface ScannedRecord {
  header: RecordHeader;
  entries: LogEntry[];
  /** pbn of the record's first data block. */
  firstPbn: number;
}

export interface ScanOptions {
  poolId: number;
  segmentBytes: number;
  start: LogPosition;
  /** Opens a segment's file, or undefined when it does not exist. */
  openSegment: (segmentNo: number) => Promise<StorageFile | undefined>;
  /** Numbers of the segment files that exist, to find where the log continues. */
  segments: number[];
  apply: (record: ScannedRecord) => void;
}

export interface ScanResult {
  /** Where the next record must be written. */
  end: LogPosition;
  records: number;
  bytes: number;
  /** Why the scan stopped, for the recovery log line. */
  stopReason: string;
  /** Segments the scan read records from (and the one it started in). */
  visited: Set<number>;
}

export async function scanLog(opts: ScanOptions): Promise<ScanResult> {
  const header = Buffer.alloc(HEADER_BYTES);
  const data = Buffer.allocUnsafe(MAX_BATCH_DATA_BYTES);
  const pos = { ...opts.start };
  let records = 0;
  let bytes = 0;
  const visited = new Set<number>([pos.segmentNo]);
  const tryAt = async (at: LogPosition): Promise<ScannedRecord | string> => {
    const file = await opts.openSegment(at.segmentNo);
    return file ? readRecord(file, at, opts, header, data) : 'segment missing';
  };
  for (;;) {
    let outcome = await tryAt(pos);
    if (typeof outcome === 'string' && pos.offsetInSegment !== 0) {
      const others = opts.segments.filter((n) => n !== pos.segmentNo);
      others.sort((a, b) => (a === pos.segmentNo + 1 ? -1 : b === pos.segmentNo + 1 ? 1 : a - b));
      for (const segmentNo of others) {
        const next = { segmentNo, offsetInSegment: 0, nextSeq: pos.nextSeq };
        const there = await tryAt(next);
        if (typeof there !== 'string') {
          Object.assign(pos, next);
          outcome = there;
          break;
        }
      }
    }
    if (typeof outcome === 'string') return { end: pos, records, bytes, stopReason: outcome, visited };
    visited.add(pos.segmentNo);
    opts.apply(outcome);
    const length = HEADER_BYTES + outcome.header.dataBlocks * BLOCK_SIZE;
    pos.offsetInSegment += length;
    pos.nextSeq++;
    records++;
    bytes += length;
  }
}

/**
 * Reads and verifies the record at `pos` (its data lands in `data`); returns why not when
 * there is no valid record there with seq pos.nextSeq (any seq when nextSeq is -1).
 */
export async function readRecord(
  file: StorageFile,
  pos: LogPosition,
  opts: Pick<ScanOptions, 'poolId' | 'segmentBytes'>,
  header: Buffer,
  data: Buffer,
): Promise<ScannedRecord | string> {
  if (pos.offsetInSegment + HEADER_BYTES > opts.segmentBytes) return 'end of segment';
  const n = await file.read(header, 0, HEADER_BYTES, pos.offsetInSegment);
  if (n < HEADER_BYTES) return 'short header';
  const check = parseHeader(header);
  if (!check.ok) return `bad header (${check.reason})`;
  const h = check.header;
  if (h.poolId !== opts.poolId) return 'record of another pool';
  if (pos.nextSeq !== -1 && h.seq !== pos.nextSeq) return `seq ${h.seq} where ${pos.nextSeq} was expected`;
  const dataBytes = h.dataBlocks * BLOCK_SIZE;
  if (dataBytes > data.length || pos.offsetInSegment + HEADER_BYTES + dataBytes > opts.segmentBytes) return 'bad length';
  const got = await file.read(data, 0, dataBytes, pos.offsetInSegment + HEADER_BYTES);
  if (got < dataBytes || dataCrc(data.subarray(0, dataBytes)) !== h.dataCrc) return 'torn or corrupt data';
  const entries: LogEntry[] = [];
  let blocks = 0;
  for (let i = 0; i < h.entryCount; i++) {
    const e = readEntry(header, i);
    if (e.op !== OP_WRITE && e.op !== OP_TRIM && e.op !== OP_ZERO) return `unknown operation ${e.op}`;
    if (e.count === 0) return 'empty entry';
    entries.push(e);
    if (e.op === OP_WRITE) blocks += e.count;
  }
  if (blocks !== h.dataBlocks) return 'entries disagree with data length';
  const blocksPerSegment = opts.segmentBytes / BLOCK_SIZE;
  const firstPbn = pos.segmentNo * blocksPerSegment + (pos.offsetInSegment + HEADER_BYTES) / BLOCK_SIZE;
  return { header: h, entries, firstPbn };
}
