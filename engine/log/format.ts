/**
 * Constants and byte layout of the log (see docs/internals/log-format.md for the grammar and a
 * worked example). All integers are little-endian.
 *
 *   record  := header-block data-block* meta-block*
 *   header  := 64-byte fixed part, then entryCount 16-byte entries, then the meta area when it
 *              fits (metaBlocks = 0), zero padded to 4096 bytes
 *   data    := the 4 KiB blocks of every WRITE entry, in entry order
 *   meta    := CRC-32 of each data block (u32 each), then the target pbn of each REF block
 *              (u32 each); in the header when it fits, else in metaBlocks blocks after the data
 *
 * Per-block CRCs let every read of a single block be verified, not only recovery's replay of a
 * whole record; keeping them in the header when they fit costs small records nothing.
 */
import { crc32 } from 'node:zlib';
import { BLOCK_SIZE } from '../block-device.ts';

export const LOG_MAGIC = 0x474c5242; // "BRLG" read as little-endian bytes
export const LOG_FORMAT_VERSION = 2;
/** Version 1 records (one CRC over all data, no REF) are still read: their blocks are unverifiable. */
export const LOG_FORMAT_VERSION_1 = 1;

export const HEADER_BYTES = BLOCK_SIZE; // one block, so data stays 4 KiB aligned in the file
export const HEADER_FIXED_BYTES = 64;
export const ENTRY_BYTES = 16;
export const MAX_ENTRIES = (HEADER_BYTES - HEADER_FIXED_BYTES) / ENTRY_BYTES; // 252
export const MAX_ENTRY_BLOCKS = 0xffff; // count is a u16
/** Bytes of meta area per data block (its CRC) and per REF block (its target pbn). */
export const META_BYTES_PER_BLOCK = 4;

// Fixed header fields: byte offsets.
const H_MAGIC = 0; // u32
const H_VERSION = 4; // u16
const H_HEADER_BLOCKS = 6; // u16, always 1 in version 1
const H_SEQ = 8; // u64 as two u32 (lo, hi): batch sequence number, +1 per record
const H_POOL_ID = 16; // u32: rejects records left by another pool in a reused file
const H_ENTRY_COUNT = 20; // u32
const H_DATA_BLOCKS = 24; // u32
const H_DATA_CRC = 28; // u32: v2: CRC-32 of the meta area; v1: CRC-32 of the data blocks
const H_META_BLOCKS = 32; // u16 (v2): blocks of meta area after the data; 0 = in the header
const H_REF_COUNT = 36; // u32 (v2): REF blocks, i.e. target pbns in the meta area
const H_SYNCED_SEQ = 40; // u64 (v2) as two u32: every record up to this seq was fdatasync'ed before this one was written
const H_HEADER_CRC = 60; // u32: CRC-32 of bytes [0,60) and of the entries

// Entry fields: byte offsets within an entry.
const E_VOLUME = 0; // u32 volume id
const E_LBA_LO = 4; // u32
const E_LBA_HI = 8; // u16: LBA (4 KiB blocks) is 48 bits
const E_COUNT = 10; // u16 blocks
const E_OP = 12; // u8

export const OP_WRITE = 1; // count data blocks follow in the data area
export const OP_TRIM = 2; // unmap: reads return zeros, no space used
export const OP_ZERO = 3; // reads return zeros, reported allocated (WRITE_ZEROES with NO_HOLE)
/** count blocks map to existing pbns (dedup): their targets are in the meta area, no data. */
export const OP_REF = 4;
export type LogOp = typeof OP_WRITE | typeof OP_TRIM | typeof OP_ZERO | typeof OP_REF;

/** Segments are fixed-size files; a record never spans two. */
export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;

export interface RecordHeader {
  version: number;
  seq: number;
  poolId: number;
  entryCount: number;
  dataBlocks: number;
  /** v2: CRC of the meta area; v1: CRC of the data. */
  dataCrc: number;
  metaBlocks: number;
  refCount: number;
  /**
   * Every record with a seq up to this one was durable when this record was written (0: no
   * claim). Lets recovery tell a torn tail (never synced) from damage to synced records.
   */
  syncedSeq: number;
}

/** Bytes of the meta area of a record. */
export function metaBytes(dataBlocks: number, refCount: number): number {
  return (dataBlocks + refCount) * META_BYTES_PER_BLOCK;
}

/** Blocks of meta area after the data: 0 when the meta area fits in the header after the entries. */
export function metaBlocksFor(entryCount: number, dataBlocks: number, refCount: number): number {
  const bytes = metaBytes(dataBlocks, refCount);
  if (HEADER_FIXED_BYTES + entryCount * ENTRY_BYTES + bytes <= HEADER_BYTES) return 0;
  return Math.ceil(bytes / BLOCK_SIZE);
}

/** Where the meta area starts, relative to the record's first byte. */
export function metaOffset(h: Pick<RecordHeader, 'entryCount' | 'dataBlocks' | 'metaBlocks'>): number {
  return h.metaBlocks === 0 ? HEADER_FIXED_BYTES + h.entryCount * ENTRY_BYTES : HEADER_BYTES + h.dataBlocks * BLOCK_SIZE;
}

/** The whole record's length in bytes. */
export function recordBytes(h: Pick<RecordHeader, 'dataBlocks' | 'metaBlocks'>): number {
  return HEADER_BYTES + (h.dataBlocks + h.metaBlocks) * BLOCK_SIZE;
}

export interface LogEntry {
  volumeId: number;
  lba: number;
  count: number;
  op: LogOp;
}

export function writeEntry(header: Buffer, index: number, e: LogEntry): void {
  const at = HEADER_FIXED_BYTES + index * ENTRY_BYTES;
  header.writeUInt32LE(e.volumeId, at + E_VOLUME);
  header.writeUInt32LE(e.lba % 2 ** 32, at + E_LBA_LO);
  header.writeUInt16LE(Math.floor(e.lba / 2 ** 32), at + E_LBA_HI);
  header.writeUInt16LE(e.count, at + E_COUNT);
  header.writeUInt8(e.op, at + E_OP);
}

export function readEntry(header: Buffer, index: number): LogEntry {
  const at = HEADER_FIXED_BYTES + index * ENTRY_BYTES;
  return {
    volumeId: header.readUInt32LE(at + E_VOLUME),
    lba: header.readUInt16LE(at + E_LBA_HI) * 2 ** 32 + header.readUInt32LE(at + E_LBA_LO),
    count: header.readUInt16LE(at + E_COUNT),
    op: header.readUInt8(at + E_OP) as LogOp,
  };
}

/** Fills the fixed fields and the header CRC (v2); entries must already be written. */
export function sealHeader(header: Buffer, h: Omit<RecordHeader, 'version'>): void {
  header.writeUInt32LE(LOG_MAGIC, H_MAGIC);
  header.writeUInt16LE(LOG_FORMAT_VERSION, H_VERSION);
  header.writeUInt16LE(1, H_HEADER_BLOCKS);
  header.writeUInt32LE(h.seq % 2 ** 32, H_SEQ);
  header.writeUInt32LE(Math.floor(h.seq / 2 ** 32), H_SEQ + 4);
  header.writeUInt32LE(h.poolId, H_POOL_ID);
  header.writeUInt32LE(h.entryCount, H_ENTRY_COUNT);
  header.writeUInt32LE(h.dataBlocks, H_DATA_BLOCKS);
  header.writeUInt32LE(h.dataCrc, H_DATA_CRC);
  header.fill(0, 32, H_HEADER_CRC);
  header.writeUInt16LE(h.metaBlocks, H_META_BLOCKS);
  header.writeUInt32LE(h.refCount, H_REF_COUNT);
  header.writeUInt32LE(h.syncedSeq % 2 ** 32, H_SYNCED_SEQ);
  header.writeUInt32LE(Math.floor(h.syncedSeq / 2 ** 32), H_SYNCED_SEQ + 4);
  header.writeUInt32LE(headerCrc(header, h.entryCount), H_HEADER_CRC);
}

function headerCrc(header: Buffer, entryCount: number): number {
  const fixed = crc32(header.subarray(0, H_HEADER_CRC));
  return crc32(header.subarray(HEADER_FIXED_BYTES, HEADER_FIXED_BYTES + entryCount * ENTRY_BYTES), fixed);
}

export type HeaderCheck =
  | { ok: true; header: RecordHeader }
  | { ok: false; reason: 'magic' | 'version' | 'crc' | 'bounds' };

/**
 * Parses and verifies a header block. A block that is not a header (zeros, stale data, a torn
 * write) is reported, never thrown: the log scanner treats it as the end of the log.
 */
export function parseHeader(block: Buffer): HeaderCheck {
  if (block.length < HEADER_BYTES || block.readUInt32LE(H_MAGIC) !== LOG_MAGIC) return { ok: false, reason: 'magic' };
  const version = block.readUInt16LE(H_VERSION);
  if (version !== LOG_FORMAT_VERSION && version !== LOG_FORMAT_VERSION_1) return { ok: false, reason: 'version' };
  const entryCount = block.readUInt32LE(H_ENTRY_COUNT);
  if (entryCount > MAX_ENTRIES || block.readUInt16LE(H_HEADER_BLOCKS) !== 1) return { ok: false, reason: 'bounds' };
  if (headerCrc(block, entryCount) !== block.readUInt32LE(H_HEADER_CRC)) return { ok: false, reason: 'crc' };
  const v2 = version === LOG_FORMAT_VERSION;
  const h: RecordHeader = {
    version,
    seq: block.readUInt32LE(H_SEQ + 4) * 2 ** 32 + block.readUInt32LE(H_SEQ),
    poolId: block.readUInt32LE(H_POOL_ID),
    entryCount,
    dataBlocks: block.readUInt32LE(H_DATA_BLOCKS),
    dataCrc: block.readUInt32LE(H_DATA_CRC),
    metaBlocks: v2 ? block.readUInt16LE(H_META_BLOCKS) : 0,
    refCount: v2 ? block.readUInt32LE(H_REF_COUNT) : 0,
    syncedSeq: v2 ? block.readUInt32LE(H_SYNCED_SEQ + 4) * 2 ** 32 + block.readUInt32LE(H_SYNCED_SEQ) : 0,
  };
  if (v2 && h.metaBlocks !== metaBlocksFor(entryCount, h.dataBlocks, h.refCount)) return { ok: false, reason: 'bounds' };
  return { ok: true, header: h };
}

export function dataCrc(data: Buffer): number {
  return crc32(data);
}

/** CRC-32 of one 4 KiB block at `offset` of buf. */
export function blockCrc(buf: Buffer, offset: number): number {
  return crc32(buf.subarray(offset, offset + BLOCK_SIZE));
}

export function segmentFileName(segmentNo: number): string {
  return `segment-${segmentNo.toString().padStart(8, '0')}.log`;
}

export function parseSegmentFileName(name: string): number | undefined {
  const m = /^segment-(\d{8})\.log$/.exec(name);
  return m ? Number(m[1]) : undefined;
}
