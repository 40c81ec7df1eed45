/** Byte layouts of the FUSE messages we decode and encode, checked field by field (fuse.h offsets). */
import { describe, expect, it } from 'vitest';
import { ATTR_OUT_BYTES, ENTRY_OUT_BYTES, FUSE_NOTIFY_INVAL_INODE, IN_HEADER_BYTES, INIT_OUT_BYTES, OUT_HEADER_BYTES, S_IFREG } from './fuse-abi.ts';
import {
  decodeFallocate,
  decodeInHeader,
  decodeInit,
  decodeName,
  decodeRead,
  decodeSetattr,
  decodeWrite,
  direntBytes,
  encodeAttrReply,
  encodeEntryReply,
  encodeInitReply,
  encodeInvalInodeNotify,
  encodeReaddirReply,
  errorReply,
  FuseDecodeError,
  readOffset,
} from './fuse-codec.ts';
import type { Attr } from './fuse-codec.ts';

function header(len: number, opcode: number, unique: bigint, nodeId: bigint): Buffer {
  const b = Buffer.alloc(len);
  b.writeUInt32LE(len, 0);
  b.writeUInt32LE(opcode, 4);
  b.writeBigUInt64LE(unique, 8);
  b.writeBigUInt64LE(nodeId, 16);
  b.writeUInt32LE(1000, 24);
  b.writeUInt32LE(100, 28);
  b.writeUInt32LE(4242, 32);
  return b;
}

const file: Attr = { ino: 2n, sizeBytes: 3 * 2 ** 32 + 5, mode: S_IFREG | 0o600, nlink: 1, uid: 7, gid: 8, timeSec: 1_700_000_000, blksize: 4096 };

describe('requests', () => {
  it('decodes the in header and checks its length against the read', () => {
    const b = header(IN_HEADER_BYTES + 8, 15, 77n, 2n);
    expect(decodeInHeader(b, IN_HEADER_BYTES + 8)).toEqual({ len: 48, opcode: 15, unique: 77n, nodeId: 2n, uid: 1000, gid: 100, pid: 4242 });
    expect(() => decodeInHeader(b, IN_HEADER_BYTES + 4)).toThrow(FuseDecodeError);
    expect(() => decodeInHeader(b, 12)).toThrow(FuseDecodeError);
  });

  it('reads 64-bit offsets exactly below 2^53 and as Infinity above', () => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(2n ** 53n - 1n);
    expect(readOffset(b, 0)).toBe(2 ** 53 - 1);
    b.writeBigUInt64LE(2n ** 53n);
    expect(readOffset(b, 0)).toBe(Number.POSITIVE_INFINITY);
    b.writeBigUInt64LE(0xffff_ffff_ffff_ffffn);
    expect(readOffset(b, 0)).toBe(Number.POSITIVE_INFINITY);
  });

  it('decodes INIT, READ, WRITE, SETATTR, FALLOCATE and names at their fuse.h offsets', () => {
    const init = Buffer.alloc(64);
    init.writeUInt32LE(7, 0);
    init.writeUInt32LE(45, 4);
    init.writeUInt32LE(131072, 8);
    init.writeUInt32LE(0x73fffffb, 12);
    expect(decodeInit(init, 0, 64)).toEqual({ major: 7, minor: 45, maxReadahead: 131072, flags: 0x73fffffb });
    expect(() => decodeInit(init, 0, 8)).toThrow(FuseDecodeError);

    const read = Buffer.alloc(40);
    read.writeBigUInt64LE(1n << 40n, 8);
    read.writeUInt32LE(65536, 16);
    expect(decodeRead(read, 0, 40)).toEqual({ offset: 2 ** 40, size: 65536 });

    const write = Buffer.alloc(40 + 3);
    write.writeBigUInt64LE(4096n, 8);
    write.writeUInt32LE(3, 16);
    write.write('abc', 40);
    expect(decodeWrite(write, 0, 43)).toEqual({ offset: 4096, size: 3, dataAt: 40 });
    expect(() => decodeWrite(write, 0, 42)).toThrow(/carries/);

    const setattr = Buffer.alloc(88);
    setattr.writeUInt32LE(1 << 3, 0);
    setattr.writeBigUInt64LE(123n, 16);
    expect(decodeSetattr(setattr, 0, 88)).toEqual({ valid: 8, size: 123 });

    const falloc = Buffer.alloc(32);
    falloc.writeBigUInt64LE(8192n, 8);
    falloc.writeBigUInt64LE(4096n, 16);
    falloc.writeUInt32LE(0x03, 24);
    expect(decodeFallocate(falloc, 0, 32)).toEqual({ offset: 8192, length: 4096, mode: 3 });

    const name = Buffer.from('xxdisk\0', 'utf8');
    expect(decodeName(name, 2, 5)).toBe('disk');
    expect(() => decodeName(name, 2, 4)).toThrow(FuseDecodeError);
  });
});

describe('replies', () => {
  it('writes the out header with a negative errno for errors', () => {
    const b = errorReply(99n, 5);
    expect(b.length).toBe(OUT_HEADER_BYTES);
    expect([b.readUInt32LE(0), b.readInt32LE(4), b.readBigUInt64LE(8)]).toEqual([16, -5, 99n]);
  });

  it('encodes the INIT reply (64 bytes) with max_write and max_pages where the kernel reads them', () => {
    const b = encodeInitReply(1n, { major: 7, minor: 38, maxReadahead: 131072, flags: 0x80408001, maxBackground: 64, congestionThreshold: 48, maxWrite: 1 << 20, timeGranNs: 1, maxPages: 256 });
    expect(b.length).toBe(OUT_HEADER_BYTES + INIT_OUT_BYTES);
    const at = OUT_HEADER_BYTES;
    expect(b.readUInt32LE(at + 12)).toBe(0x80408001);
    expect([b.readUInt16LE(at + 16), b.readUInt16LE(at + 18)]).toEqual([64, 48]);
    expect(b.readUInt32LE(at + 20)).toBe(1 << 20);
    expect(b.readUInt16LE(at + 28)).toBe(256);
    expect(b.subarray(at + 30).every((x) => x === 0)).toBe(true);
  });

  it('encodes fuse_entry_out and fuse_attr_out around the same fuse_attr', () => {
    const entry = encodeEntryReply(3n, file, { entrySec: 10, attrSec: 20 });
    expect(entry.length).toBe(OUT_HEADER_BYTES + ENTRY_OUT_BYTES);
    const e = OUT_HEADER_BYTES;
    expect([entry.readBigUInt64LE(e), entry.readBigUInt64LE(e + 16), entry.readBigUInt64LE(e + 24)]).toEqual([2n, 10n, 20n]);
    const attr = encodeAttrReply(3n, file, { entrySec: 10, attrSec: 20 });
    expect(attr.length).toBe(OUT_HEADER_BYTES + ATTR_OUT_BYTES);
    expect(attr.readBigUInt64LE(OUT_HEADER_BYTES)).toBe(20n);
    // The same fuse_attr bytes in both.
    expect(entry.subarray(e + 40).equals(attr.subarray(OUT_HEADER_BYTES + 16))).toBe(true);
    const a = e + 40;
    expect(entry.readBigUInt64LE(a + 8)).toBe(BigInt(file.sizeBytes));
    expect(entry.readBigUInt64LE(a + 16)).toBe(BigInt(Math.ceil(file.sizeBytes / 512)));
    expect(entry.readBigUInt64LE(a + 32)).toBe(1_700_000_000n);
    expect([entry.readUInt32LE(a + 60), entry.readUInt32LE(a + 64), entry.readUInt32LE(a + 68), entry.readUInt32LE(a + 72), entry.readUInt32LE(a + 80)]).toEqual([
      S_IFREG | 0o600,
      1,
      7,
      8,
      4096,
    ]);
  });

  it('packs dirents padded to 8 bytes, each pointing at the next, and stops at the size asked', () => {
    const entries = [
      { ino: 1n, name: '.', type: 4 },
      { ino: 1n, name: '..', type: 4 },
      { ino: 2n, name: 'disk', type: 8 },
    ];
    expect(entries.map((d) => direntBytes(d.name))).toEqual([32, 32, 32]);
    const all = encodeReaddirReply(5n, entries, 0, 4096);
    expect(all.length).toBe(OUT_HEADER_BYTES + 96);
    const third = OUT_HEADER_BYTES + 64;
    expect([all.readBigUInt64LE(third), all.readBigUInt64LE(third + 8), all.readUInt32LE(third + 16), all.readUInt32LE(third + 20)]).toEqual([2n, 3n, 4, 8]);
    expect(all.toString('utf8', third + 24, third + 28)).toBe('disk');
    expect(encodeReaddirReply(5n, entries, 1, 40).length).toBe(OUT_HEADER_BYTES + 32); // one fits
    expect(encodeReaddirReply(5n, entries, 3, 4096).length).toBe(OUT_HEADER_BYTES); // end of directory
  });

  it('encodes FUSE_NOTIFY_INVAL_INODE as unique 0 with the code in the error field', () => {
    const b = encodeInvalInodeNotify(2n);
    expect([b.readUInt32LE(0), b.readInt32LE(4), b.readBigUInt64LE(8)]).toEqual([40, FUSE_NOTIFY_INVAL_INODE, 0n]);
    expect([b.readBigUInt64LE(16), b.readBigInt64LE(24), b.readBigInt64LE(32)]).toEqual([2n, -1n, 0n]);
  });
});
