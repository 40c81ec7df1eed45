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
import { EngineError } from '../errors.ts';
import type { StorageFile } from '../storage/storage.ts';
import { crc32 } from 'node:zlib';
import {
  HEADER_BYTES,
  LOG_FORMAT_VERSION_1,
  META_BYTES_PER_BLOCK,
  OP_REF,
  OP_TRIM,
  OP_WRITE,
  OP_ZERO,
  blockCrc,
  dataCrc,
  metaBytes,
  metaOffset,
  parseHeader,
  readEntry,
  recordBytes,
  type LogEntry,
  type RecordHeader,
} from './format.ts';
import type { LogPosition } from './log-writer.ts';
import { MAX_BATCH_DATA_BYTES } from './log-writer.ts';

/** Meta area of the largest record (a CRC per data block and as many REF targets). */
const MAX_META_BYTES = 2 * (MAX_BATCH_DATA_BYTES / BLOCK_SIZE) * META_BYTES_PER_BLOCK;

export interface ScannedRecord {
  header: RecordHeader;
  entries: LogEntry[];
  /** pbn of the record's first data block. */
  firstPbn: number;
  /** CRC of each data block (v2), or undefined (v1: only the whole data was checksummed). */
  blockCrcs: Uint32Array | undefined;
  /** Target pbn of each REF block, in entry order. */
  refTargets: Uint32Array;
}

export interface ReadRecordOptions {
  poolId: number;
  segmentBytes: number;
  /**
   * Verify every data block (recovery). The cleaner reads whole records but verifies only the
   * blocks it copies, so a damaged dead block does not stop it from moving the live ones.
   */
  verifyData?: boolean;
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
  /** Durable records replayed although some data block failed its CRC (reads of it will fail). */
  damaged: DamagedRecord[];
}

export interface DamagedRecord {
  seq: number;
  segmentNo: number;
  offsetInSegment: number;
}

const TORN_OR_CORRUPT_DATA = 'torn or corrupt data';

export async function scanLog(opts: ScanOptions): Promise<ScanResult> {
  const header = Buffer.alloc(HEADER_BYTES);
  const data = Buffer.allocUnsafe(MAX_BATCH_DATA_BYTES);
  const pos = { ...opts.start };
  let records = 0;
  let bytes = 0;
  const visited = new Set<number>([pos.segmentNo]);
  const damaged: DamagedRecord[] = [];
  const tryAt = async (at: LogPosition): Promise<ScannedRecord | string> => {
    const file = await opts.openSegment(at.segmentNo);
    if (!file) return 'segment missing';
    const strict = await readRecord(file, at, opts, header, data);
    if (strict !== TORN_OR_CORRUPT_DATA) return strict;
    // Header and meta intact, some data block not: torn if never synced, else damaged. A
    // damaged record is applied — its metadata is sound, and each damaged block fails its
    // checksum when read — so one bad block does not cost everything logged after it.
    const lax = await readRecord(file, at, { ...opts, verifyData: false }, header, data);
    if (typeof lax === 'string') return strict;
    if (!onlyRotCanExplain(lax, data) && !(await findVoucher(at, lax.header.seq, opts))) return strict;
    damaged.push({ seq: lax.header.seq, segmentNo: at.segmentNo, offsetInSegment: at.offsetInSegment });
    return lax;
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
    if (typeof outcome === 'string') {
      await refuseIfDurable(pos, outcome, opts);
      return { end: pos, records, bytes, stopReason: outcome, visited, damaged };
    }
    visited.add(pos.segmentNo);
    opts.apply(outcome);
    const length = recordBytes(outcome.header);
    pos.offsetInSegment += length;
    pos.nextSeq++;
    records++;
    bytes += length;
  }
}

const SECTOR_BYTES = 512;

/**
 * Whether the bad data blocks of a record whose header and meta are intact can only be damage,
 * not a torn write. The log is written only over zeros (segments start empty, recovery zeroes
 * past the end), so a torn write leaves at least one 512-byte sector of zeros in a bad block;
 * a bad block without any zero sector was written whole and changed since.
 */
function onlyRotCanExplain(rec: ScannedRecord, data: Buffer): boolean {
  const crcs = rec.blockCrcs;
  if (!crcs) return false;
  let bad = 0;
  for (let i = 0; i < rec.header.dataBlocks; i++) {
    const at = i * BLOCK_SIZE;
    if (blockCrc(data, at) === crcs[i]) continue;
    bad++;
    for (let s = at; s < at + BLOCK_SIZE; s += SECTOR_BYTES) if (isZero(data, s, SECTOR_BYTES)) return false;
  }
  return bad > 0;
}

function isZero(buf: Buffer, at: number, length: number): boolean {
  for (let i = at; i < at + length; i++) if (buf[i] !== 0) return false;
  return true;
}

/** How much of a segment is read at a time when looking for later records. */
const SEARCH_CHUNK_BYTES = 1024 * 1024;

/**
 * The log ends where a record fails its checks. That is right for a torn tail (the records
 * were never synced, nothing durable is lost) and wrong for damage to records that were
 * synced: silently cutting there would drop acknowledged data. Every record says up to which
 * seq the log was durable when it was written, so if any later record (same pool, higher seq)
 * says the failed seq was durable, the failure is damage: refuse to open, keep the evidence.
 */
async function refuseIfDurable(pos: LogPosition, reason: string, opts: ScanOptions): Promise<void> {
  const voucher = await findVoucher(pos, pos.nextSeq, opts);
  if (!voucher) return;
  throw new EngineError(
    'CORRUPTION',
    `log record ${pos.nextSeq} (segment ${pos.segmentNo}, offset ${pos.offsetInSegment}) is damaged (${reason}), but record ${voucher.seq} at ${voucher.where} was written after it was made durable: ` +
      'refusing to open rather than drop acknowledged data; restore the pool from a backup or copy the volumes out with a recovery tool',
  );
}

/** A later record saying that record `seq` (at or expected at `pos`) was durable, if any. */
async function findVoucher(pos: LogPosition, seq: number, opts: ScanOptions): Promise<{ seq: number; where: string } | undefined> {
  const claims = (h: RecordHeader): boolean => h.poolId === opts.poolId && h.seq > seq && h.syncedSeq >= seq;
  // The failed record's own length may be unreadable: look at every block after it.
  const here = await opts.openSegment(pos.segmentNo);
  if (here) {
    const chunk = Buffer.allocUnsafe(SEARCH_CHUNK_BYTES);
    for (let at = pos.offsetInSegment + BLOCK_SIZE; at < opts.segmentBytes; at += SEARCH_CHUNK_BYTES) {
      const n = await here.read(chunk, 0, Math.min(SEARCH_CHUNK_BYTES, opts.segmentBytes - at), at);
      for (let b = 0; b + HEADER_BYTES <= n; b += BLOCK_SIZE) {
        const check = parseHeader(chunk.subarray(b, b + HEADER_BYTES));
        if (check.ok && claims(check.header)) return { seq: check.header.seq, where: `segment ${pos.segmentNo} offset ${at + b}` };
      }
      if (n < SEARCH_CHUNK_BYTES) break;
    }
  }
  // The log may have gone on in another segment: walk those whose records are newer.
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  for (const segmentNo of opts.segments) {
    if (segmentNo === pos.segmentNo) continue;
    const file = await opts.openSegment(segmentNo);
    if (!file) continue;
    const at = { segmentNo, offsetInSegment: 0, nextSeq: -1 };
    for (;;) {
      const h = await readHeader(file, at, opts, header);
      if (typeof h === 'string' || h.seq <= seq) break;
      if (claims(h)) return { seq: h.seq, where: `segment ${segmentNo} offset ${at.offsetInSegment}` };
      at.offsetInSegment += recordBytes(h);
    }
  }
  return undefined;
}

/**
 * Reads and verifies the record at `pos` (its data lands in `data`); returns why not when
 * there is no valid record there with seq pos.nextSeq (any seq when nextSeq is -1).
 */
export async function readRecord(
  file: StorageFile,
  pos: LogPosition,
  opts: ReadRecordOptions,
  header: Buffer,
  data: Buffer,
): Promise<ScannedRecord | string> {
  const h = await readHeader(file, pos, opts, header);
  if (typeof h === 'string') return h;
  const dataBytes = h.dataBlocks * BLOCK_SIZE;
  if (dataBytes > data.length) return 'bad length';
  const got = await file.read(data, 0, dataBytes, pos.offsetInSegment + HEADER_BYTES);
  if (got < dataBytes) return 'short data';
  const v1 = h.version === LOG_FORMAT_VERSION_1;
  if (v1 && dataCrc(data.subarray(0, dataBytes)) !== h.dataCrc) return 'torn or corrupt data';
  const meta = v1 ? undefined : await readMeta(file, pos, h, header);
  if (typeof meta === 'string') return meta;
  const blockCrcs = meta && new Uint32Array(h.dataBlocks);
  if (meta && blockCrcs) {
    for (let i = 0; i < h.dataBlocks; i++) {
      blockCrcs[i] = meta.readUInt32LE(i * META_BYTES_PER_BLOCK);
      if (opts.verifyData !== false && blockCrc(data, i * BLOCK_SIZE) !== blockCrcs[i]) return TORN_OR_CORRUPT_DATA;
    }
  }
  const refTargets = new Uint32Array(h.refCount);
  for (let i = 0; i < h.refCount; i++) refTargets[i] = meta!.readUInt32LE((h.dataBlocks + i) * META_BYTES_PER_BLOCK);
  const entries: LogEntry[] = [];
  let blocks = 0;
  let refs = 0;
  for (let i = 0; i < h.entryCount; i++) {
    const e = readEntry(header, i);
    if (e.op !== OP_WRITE && e.op !== OP_TRIM && e.op !== OP_ZERO && (e.op !== OP_REF || v1)) return `unknown operation ${e.op}`;
    if (e.count === 0) return 'empty entry';
    entries.push(e);
    if (e.op === OP_WRITE) blocks += e.count;
    if (e.op === OP_REF) refs += e.count;
  }
  if (blocks !== h.dataBlocks || refs !== h.refCount) return 'entries disagree with data length';
  return { header: h, entries, firstPbn: firstDataPbn(pos, opts.segmentBytes), blockCrcs, refTargets };
}

function firstDataPbn(pos: LogPosition, segmentBytes: number): number {
  return pos.segmentNo * (segmentBytes / BLOCK_SIZE) + (pos.offsetInSegment + HEADER_BYTES) / BLOCK_SIZE;
}

/** Reads and checks the header at pos (into `header`): everything but the data. */
async function readHeader(file: StorageFile, pos: LogPosition, opts: ReadRecordOptions, header: Buffer): Promise<RecordHeader | string> {
  if (pos.offsetInSegment + HEADER_BYTES > opts.segmentBytes) return 'end of segment';
  const n = await file.read(header, 0, HEADER_BYTES, pos.offsetInSegment);
  if (n < HEADER_BYTES) return 'short header';
  const check = parseHeader(header);
  if (!check.ok) return `bad header (${check.reason})`;
  const h = check.header;
  if (h.poolId !== opts.poolId) return 'record of another pool';
  if (pos.nextSeq !== -1 && h.seq !== pos.nextSeq) return `seq ${h.seq} where ${pos.nextSeq} was expected`;
  if (h.dataBlocks * BLOCK_SIZE > MAX_BATCH_DATA_BYTES || pos.offsetInSegment + recordBytes(h) > opts.segmentBytes) return 'bad length';
  return h;
}

/** The verified meta area of a v2 record (a view into `header`, or a fresh buffer for a trailer). */
async function readMeta(file: StorageFile, pos: LogPosition, h: RecordHeader, header: Buffer): Promise<Buffer | string> {
  const bytes = metaBytes(h.dataBlocks, h.refCount);
  if (bytes > MAX_META_BYTES) return 'bad length';
  let meta: Buffer;
  if (h.metaBlocks === 0) {
    meta = header.subarray(metaOffset(h), metaOffset(h) + bytes);
  } else {
    meta = Buffer.allocUnsafe(bytes);
    const got = await file.read(meta, 0, bytes, pos.offsetInSegment + metaOffset(h));
    if (got < bytes) return 'short meta';
  }
  return crc32(meta) === h.dataCrc ? meta : 'torn or corrupt meta';
}

/**
 * Walks a segment's records from offset 0 and reports each data block's CRC (`crc`), or that
 * it has none to check against (`unverifiable`, v1 records). Stops at the first record that is
 * not valid: past the log's end, or damaged. A reused segment number starts from an empty
 * file, so no stale record of an earlier use can be met.
 */
export async function readSegmentChecksums(
  file: StorageFile,
  segmentNo: number,
  opts: Pick<ReadRecordOptions, 'poolId' | 'segmentBytes'>,
  sink: { crc(pbn: number, crc: number): void; unverifiable(pbn: number, count: number): void },
): Promise<void> {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  const pos = { segmentNo, offsetInSegment: 0, nextSeq: -1 };
  for (;;) {
    const h = await readHeader(file, pos, opts, header);
    if (typeof h === 'string') return;
    const firstPbn = firstDataPbn(pos, opts.segmentBytes);
    if (h.version === LOG_FORMAT_VERSION_1) {
      sink.unverifiable(firstPbn, h.dataBlocks);
    } else {
      const meta = await readMeta(file, pos, h, header);
      if (typeof meta === 'string') return;
      for (let i = 0; i < h.dataBlocks; i++) sink.crc(firstPbn + i, meta.readUInt32LE(i * META_BYTES_PER_BLOCK));
    }
    pos.offsetInSegment += recordBytes(h);
  }
}
