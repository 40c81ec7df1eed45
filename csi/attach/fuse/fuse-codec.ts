/**
 * Bytes of the FUSE kernel protocol to values and back (struct layouts: fuse-abi.ts).
 *
 * Requests are decoded in place from the buffer a /dev/fuse read filled, at fixed offsets, into
 * small plain objects; nothing here keeps a reference into that buffer, so the reader may reuse
 * it as soon as the decoder returns. Replies are built as one buffer each, header included,
 * because the kernel wants a whole reply in one write(2).
 *
 * 64-bit offsets and sizes become numbers: a block device file here is far below 2^53 bytes, so
 * `readOffset` maps anything at or above 2^53 to Infinity, which every range check refuses.
 */
import assert from 'node:assert/strict';
import {
  ATTR_BYTES,
  ATTR_OUT_BYTES,
  DIRENT_HEADER_BYTES,
  ENTRY_OUT_BYTES,
  FALLOCATE_IN_BYTES,
  FSYNC_IN_BYTES,
  FUSE_NOTIFY_INVAL_INODE,
  IN_HEADER_BYTES,
  INIT_IN_MIN_BYTES,
  INIT_OUT_BYTES,
  INTERRUPT_IN_BYTES,
  NOTIFY_INVAL_INODE_BYTES,
  OPEN_OUT_BYTES,
  OUT_HEADER_BYTES,
  READ_IN_BYTES,
  SETATTR_IN_BYTES,
  STATFS_OUT_BYTES,
  WRITE_IN_BYTES,
  WRITE_OUT_BYTES,
} from './fuse-abi.ts';

/** A request the kernel sent that does not parse: the session answers EINVAL (or EIO) and goes on. */
export class FuseDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FuseDecodeError';
  }
}

export interface InHeader {
  /** Bytes of the whole request, header included. */
  len: number;
  opcode: number;
  unique: bigint;
  nodeId: bigint;
  uid: number;
  gid: number;
  pid: number;
}

/** The header of a request of `bytesRead` bytes; throws FuseDecodeError when the lengths disagree. */
export function decodeInHeader(buf: Buffer, bytesRead: number): InHeader {
  if (bytesRead < IN_HEADER_BYTES) throw new FuseDecodeError(`a request of ${bytesRead} bytes is shorter than its header`);
  const len = buf.readUInt32LE(0);
  if (len !== bytesRead) throw new FuseDecodeError(`a request says it has ${len} bytes, the read returned ${bytesRead}`);
  return {
    len,
    opcode: buf.readUInt32LE(4),
    unique: buf.readBigUInt64LE(8),
    nodeId: buf.readBigUInt64LE(16),
    uid: buf.readUInt32LE(24),
    gid: buf.readUInt32LE(28),
    pid: buf.readUInt32LE(32),
  };
}

/** A little-endian u64 as a number; Infinity at or above 2^53 (out of range for every file here). */
export function readOffset(buf: Buffer, at: number): number {
  const high = buf.readUInt32LE(at + 4);
  if (high >= 0x20_0000) return Number.POSITIVE_INFINITY;
  return high * 0x1_0000_0000 + buf.readUInt32LE(at);
}

function requireBody(opcode: string, bodyBytes: number, needed: number): void {
  if (bodyBytes < needed) throw new FuseDecodeError(`${opcode}: ${bodyBytes} body bytes, expected at least ${needed}`);
}

// ---- Request bodies (each takes the buffer, where the body starts, and its length) --------

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

export function decodeInit(buf: Buffer, at: number, bodyBytes: number): InitIn {
  requireBody('INIT', bodyBytes, INIT_IN_MIN_BYTES);
  return { major: buf.readUInt32LE(at), minor: buf.readUInt32LE(at + 4), maxReadahead: buf.readUInt32LE(at + 8), flags: buf.readUInt32LE(at + 12) };
}

/** LOOKUP's body: a NUL-terminated name. */
export function decodeName(buf: Buffer, at: number, bodyBytes: number): string {
  const end = buf.indexOf(0, at);
  if (end < 0 || end >= at + bodyBytes) throw new FuseDecodeError('a name without its terminating NUL');
  return buf.toString('utf8', at, end);
}

export interface SetattrIn {
  /** FATTR_* bits saying which fields are set. */
  valid: number;
  size: number;
}

export function decodeSetattr(buf: Buffer, at: number, bodyBytes: number): SetattrIn {
  requireBody('SETATTR', bodyBytes, SETATTR_IN_BYTES);
  return { valid: buf.readUInt32LE(at), size: readOffset(buf, at + 16) };
}

/** OPEN / OPENDIR: the open(2) flags. */
export function decodeOpenFlags(buf: Buffer, at: number, bodyBytes: number): number {
  requireBody('OPEN', bodyBytes, 8);
  return buf.readUInt32LE(at);
}

export interface ReadIn {
  offset: number;
  size: number;
}

export function decodeRead(buf: Buffer, at: number, bodyBytes: number): ReadIn {
  requireBody('READ', bodyBytes, READ_IN_BYTES);
  return { offset: readOffset(buf, at + 8), size: buf.readUInt32LE(at + 16) };
}

export interface WriteIn {
  offset: number;
  size: number;
  /** Where the data starts in the request buffer. */
  dataAt: number;
}

export function decodeWrite(buf: Buffer, at: number, bodyBytes: number): WriteIn {
  requireBody('WRITE', bodyBytes, WRITE_IN_BYTES);
  const size = buf.readUInt32LE(at + 16);
  if (bodyBytes !== WRITE_IN_BYTES + size) throw new FuseDecodeError(`WRITE of ${size} bytes carries ${bodyBytes - WRITE_IN_BYTES}`);
  return { offset: readOffset(buf, at + 8), size, dataAt: at + WRITE_IN_BYTES };
}

export function decodeFsyncFlags(buf: Buffer, at: number, bodyBytes: number): number {
  requireBody('FSYNC', bodyBytes, FSYNC_IN_BYTES);
  return buf.readUInt32LE(at + 8);
}

export interface FallocateIn {
  offset: number;
  length: number;
  mode: number;
}

export function decodeFallocate(buf: Buffer, at: number, bodyBytes: number): FallocateIn {
  requireBody('FALLOCATE', bodyBytes, FALLOCATE_IN_BYTES);
  return { offset: readOffset(buf, at + 8), length: readOffset(buf, at + 16), mode: buf.readUInt32LE(at + 24) };
}

/** READDIR's offset: where the previous reply stopped (0 at the start). */
export function decodeReaddir(buf: Buffer, at: number, bodyBytes: number): ReadIn {
  return decodeRead(buf, at, bodyBytes);
}

export function decodeInterrupt(buf: Buffer, at: number, bodyBytes: number): bigint {
  requireBody('INTERRUPT', bodyBytes, INTERRUPT_IN_BYTES);
  return buf.readBigUInt64LE(at);
}

// ---- Replies ------------------------------------------------------------------------------

/** A reply of `bodyBytes` with its header filled in (error 0); the body starts at OUT_HEADER_BYTES. */
export function replyBuffer(unique: bigint, bodyBytes: number): Buffer {
  const buf = Buffer.alloc(OUT_HEADER_BYTES + bodyBytes);
  writeOutHeader(buf, OUT_HEADER_BYTES + bodyBytes, 0, unique);
  return buf;
}

export function writeOutHeader(buf: Buffer, len: number, error: number, unique: bigint): void {
  buf.writeUInt32LE(len, 0);
  buf.writeInt32LE(error, 4);
  buf.writeBigUInt64LE(unique, 8);
}

/** An error reply: the header alone, with -errno. */
export function errorReply(unique: bigint, errno: number): Buffer {
  assert.ok(errno > 0, 'errno must be positive');
  const buf = Buffer.alloc(OUT_HEADER_BYTES);
  writeOutHeader(buf, OUT_HEADER_BYTES, -errno, unique);
  return buf;
}

export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGranNs: number;
  maxPages: number;
}

export function encodeInitReply(unique: bigint, init: InitOut): Buffer {
  const buf = replyBuffer(unique, INIT_OUT_BYTES);
  const at = OUT_HEADER_BYTES;
  buf.writeUInt32LE(init.major, at);
  buf.writeUInt32LE(init.minor, at + 4);
  buf.writeUInt32LE(init.maxReadahead, at + 8);
  buf.writeUInt32LE(init.flags >>> 0, at + 12);
  buf.writeUInt16LE(init.maxBackground, at + 16);
  buf.writeUInt16LE(init.congestionThreshold, at + 18);
  buf.writeUInt32LE(init.maxWrite, at + 20);
  buf.writeUInt32LE(init.timeGranNs, at + 24);
  buf.writeUInt16LE(init.maxPages, at + 28);
  // map_alignment, flags2 and the unused words stay zero.
  return buf;
}

export interface Attr {
  ino: bigint;
  sizeBytes: number;
  /** File type and permission bits (S_IFREG | 0o600). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** atime = mtime = ctime, in seconds. */
  timeSec: number;
  blksize: number;
}

/** fuse_attr at `at`. */
export function writeAttr(buf: Buffer, at: number, attr: Attr): void {
  buf.writeBigUInt64LE(attr.ino, at);
  buf.writeBigUInt64LE(BigInt(attr.sizeBytes), at + 8);
  buf.writeBigUInt64LE(BigInt(Math.ceil(attr.sizeBytes / 512)), at + 16); // blocks of 512 bytes
  for (const field of [24, 32, 40]) buf.writeBigUInt64LE(BigInt(attr.timeSec), at + field);
  // atimensec, mtimensec, ctimensec (at + 48..59) stay zero.
  buf.writeUInt32LE(attr.mode, at + 60);
  buf.writeUInt32LE(attr.nlink, at + 64);
  buf.writeUInt32LE(attr.uid, at + 68);
  buf.writeUInt32LE(attr.gid, at + 72);
  // rdev (at + 76) stays zero.
  buf.writeUInt32LE(attr.blksize, at + 80);
  // flags (at + 84) stay zero.
}

/** How long the kernel may cache a name or attributes without asking again. */
export interface Validity {
  entrySec: number;
  attrSec: number;
}

export function encodeEntryReply(unique: bigint, attr: Attr, validity: Validity): Buffer {
  const buf = replyBuffer(unique, ENTRY_OUT_BYTES);
  const at = OUT_HEADER_BYTES;
  buf.writeBigUInt64LE(attr.ino, at); // nodeid
  // generation (at + 8) stays zero: node ids are never reused.
  buf.writeBigUInt64LE(BigInt(validity.entrySec), at + 16);
  buf.writeBigUInt64LE(BigInt(validity.attrSec), at + 24);
  writeAttr(buf, at + 40, attr);
  return buf;
}

export function encodeAttrReply(unique: bigint, attr: Attr, validity: Validity): Buffer {
  const buf = replyBuffer(unique, ATTR_OUT_BYTES);
  buf.writeBigUInt64LE(BigInt(validity.attrSec), OUT_HEADER_BYTES);
  writeAttr(buf, OUT_HEADER_BYTES + ATTR_OUT_BYTES - ATTR_BYTES, attr);
  return buf;
}

export function encodeOpenReply(unique: bigint, fh: bigint, openFlags: number): Buffer {
  const buf = replyBuffer(unique, OPEN_OUT_BYTES);
  buf.writeBigUInt64LE(fh, OUT_HEADER_BYTES);
  buf.writeUInt32LE(openFlags, OUT_HEADER_BYTES + 8);
  return buf;
}

export function encodeWriteReply(unique: bigint, size: number): Buffer {
  const buf = replyBuffer(unique, WRITE_OUT_BYTES);
  buf.writeUInt32LE(size, OUT_HEADER_BYTES);
  return buf;
}

export interface Statfs {
  blocks: number;
  blockBytes: number;
  files: number;
}

export function encodeStatfsReply(unique: bigint, s: Statfs): Buffer {
  const buf = replyBuffer(unique, STATFS_OUT_BYTES);
  const at = OUT_HEADER_BYTES;
  buf.writeBigUInt64LE(BigInt(s.blocks), at); // blocks; bfree and bavail stay zero: the file is the device
  buf.writeBigUInt64LE(BigInt(s.files), at + 24); // files; ffree stays zero
  buf.writeUInt32LE(s.blockBytes, at + 40); // bsize
  buf.writeUInt32LE(255, at + 44); // namelen
  buf.writeUInt32LE(s.blockBytes, at + 48); // frsize
  return buf;
}

export interface Dirent {
  ino: bigint;
  name: string;
  /** DT_DIR, DT_REG. */
  type: number;
}

/** Bytes one dirent takes in a READDIR reply: header + name, padded to 8. */
export function direntBytes(name: string): number {
  return (DIRENT_HEADER_BYTES + Buffer.byteLength(name) + 7) & ~7;
}

/**
 * A READDIR reply with the entries from index `offset` on that fit in `maxBytes`. Each entry's
 * `off` is the index of the next one, which is what the kernel sends back to continue.
 */
export function encodeReaddirReply(unique: bigint, entries: readonly Dirent[], offset: number, maxBytes: number): Buffer {
  let bytes = 0;
  let end = offset;
  while (end < entries.length && bytes + direntBytes(entries[end]!.name) <= maxBytes) bytes += direntBytes(entries[end++]!.name);
  const buf = replyBuffer(unique, bytes);
  let at = OUT_HEADER_BYTES;
  for (let i = offset; i < end; i++) {
    const e = entries[i]!;
    const nameBytes = Buffer.byteLength(e.name);
    buf.writeBigUInt64LE(e.ino, at);
    buf.writeBigUInt64LE(BigInt(i + 1), at + 8);
    buf.writeUInt32LE(nameBytes, at + 16);
    buf.writeUInt32LE(e.type, at + 20);
    buf.write(e.name, at + DIRENT_HEADER_BYTES, 'utf8');
    at += direntBytes(e.name); // the padding is already zero (Buffer.alloc)
  }
  return buf;
}

/**
 * FUSE_NOTIFY_INVAL_INODE for `ino`: unique 0, the code in the error field. An offset of -1
 * invalidates the attributes only (the next stat asks us again, and learns the new size) and
 * leaves cached pages alone: growing a file changes none of its bytes.
 */
export function encodeInvalInodeNotify(ino: bigint, offset = -1n, length = 0n): Buffer {
  const len = OUT_HEADER_BYTES + NOTIFY_INVAL_INODE_BYTES;
  const buf = Buffer.alloc(len);
  writeOutHeader(buf, len, FUSE_NOTIFY_INVAL_INODE, 0n);
  buf.writeBigUInt64LE(ino, OUT_HEADER_BYTES);
  buf.writeBigInt64LE(offset, OUT_HEADER_BYTES + 8);
  buf.writeBigInt64LE(length, OUT_HEADER_BYTES + 16);
  return buf;
}
