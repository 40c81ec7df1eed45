/**
 * The filesystem's answers to the requests a loop device and the usual tools send, with an
 * in-memory backend and a recording replier: requests are built as the kernel lays them out,
 * replies are read back at fuse.h offsets.
 */
import { describe, expect, it } from 'vitest';
import { BlockIoError } from './block-backend.ts';
import type { BlockBackend } from './block-backend.ts';
import { DISK_FILE_NAME, DiskFilesystem, FILE_NODE_ID } from './disk-fs.ts';
import * as abi from './fuse-abi.ts';
import { decodeInHeader } from './fuse-codec.ts';

const MiB = 1024 * 1024;

class MemoryBackend implements BlockBackend {
  data: Buffer;
  readOnly = false;
  canWriteZeroes = true;
  flushes = 0;
  fail: BlockIoError | undefined;
  /** Resolves pending writes when called; undefined: writes complete at once. */
  gate: Promise<void> | undefined;

  constructor(sizeBytes: number) {
    this.data = Buffer.alloc(sizeBytes);
  }
  get sizeBytes(): number {
    return this.data.length;
  }
  async read(offset: number, dest: Buffer): Promise<void> {
    if (this.fail) throw this.fail;
    this.data.copy(dest, 0, offset, offset + dest.length);
  }
  async write(offset: number, data: Buffer): Promise<void> {
    await this.gate;
    if (this.fail) throw this.fail;
    data.copy(this.data, offset);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.data.fill(0, offset, offset + length);
  }
  async flush(): Promise<void> {
    if (this.fail) throw this.fail;
    this.flushes++;
  }
}

interface Reply {
  unique: bigint;
  error: number;
  body: Buffer;
}

function setup(sizeBytes = 4 * MiB): { fs: DiskFilesystem; backend: MemoryBackend; replies: Reply[]; notes: Buffer[]; send: (op: number, node: bigint, body?: Buffer) => bigint } {
  const backend = new MemoryBackend(sizeBytes);
  const replies: Reply[] = [];
  const notes: Buffer[] = [];
  const replier = {
    reply: (m: Buffer) => replies.push({ unique: m.readBigUInt64LE(8), error: m.readInt32LE(4), body: Buffer.from(m.subarray(16, m.readUInt32LE(0))) }),
    replyError: (unique: bigint, errno: number) => replies.push({ unique, error: -errno, body: Buffer.alloc(0) }),
    notify: async (m: Buffer) => void notes.push(m),
  };
  const log = { info: () => undefined, warn: () => undefined, error: () => undefined };
  const fs = new DiskFilesystem({ backend, replier, logger: log, maxWriteBytes: MiB, uid: 0, gid: 0 });
  let unique = 100n;
  const send = (op: number, node: bigint, body: Buffer = Buffer.alloc(0)): bigint => {
    const u = (unique += 2n);
    const req = Buffer.alloc(abi.IN_HEADER_BYTES + body.length);
    req.writeUInt32LE(req.length, 0);
    req.writeUInt32LE(op, 4);
    req.writeBigUInt64LE(u, 8);
    req.writeBigUInt64LE(node, 16);
    body.copy(req, abi.IN_HEADER_BYTES);
    fs.handle(decodeInHeader(req, req.length), req, abi.IN_HEADER_BYTES, body.length);
    req.fill(0xee); // the session reads the next request into the same buffer at once
    return u;
  };
  return { fs, backend, replies, notes, send };
}

function initBody(minor: number, flags: number): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(7, 0);
  b.writeUInt32LE(minor, 4);
  b.writeUInt32LE(128 * 1024, 8);
  b.writeUInt32LE(flags >>> 0, 12);
  return b;
}

function rwBody(offset: number, size: number, data?: Buffer): Buffer {
  const b = Buffer.alloc(40 + (data?.length ?? 0));
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeUInt32LE(size, 16);
  data?.copy(b, 40);
  return b;
}

function fallocBody(offset: number, length: number, mode: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeBigUInt64LE(BigInt(offset), 8);
  b.writeBigUInt64LE(BigInt(length), 16);
  b.writeUInt32LE(mode, 24);
  return b;
}

const flush = (): Promise<void> => new Promise((r) => setImmediate(r));
const ALL_FLAGS = 0x73fffffb;

describe('DiskFilesystem', () => {
  it('INIT: takes the flags it wants from what the kernel offers, and 1 MiB writes in 256 pages', async () => {
    const { fs, replies, send } = setup();
    send(abi.FUSE_INIT, 0n, initBody(45, ALL_FLAGS));
    await fs.initialized;
    const out = replies[0]!;
    expect(out.error).toBe(0);
    expect([out.body.readUInt32LE(0), out.body.readUInt32LE(4)]).toEqual([7, 38]);
    const flags = out.body.readUInt32LE(12);
    expect(flags).toBe(abi.FUSE_ASYNC_READ | abi.FUSE_BIG_WRITES | abi.FUSE_ASYNC_DIO | abi.FUSE_MAX_PAGES);
    expect(flags & (1 << 16)).toBe(0); // never the writeback cache: writes must reach us before they count
    expect([out.body.readUInt32LE(20), out.body.readUInt16LE(28)]).toEqual([MiB, 256]);
  });

  it('INIT: refuses a kernel older than 7.28 with EPROTO', async () => {
    const { fs, replies, send } = setup();
    send(abi.FUSE_INIT, 0n, initBody(26, ALL_FLAGS & ~abi.FUSE_MAX_PAGES));
    await expect(fs.initialized).rejects.toThrow(/7\.28/);
    expect(replies[0]!.error).toBe(-abi.EPROTO);
  });

  it('LOOKUP, GETATTR, READDIR: one directory with one file of the export\'s size', () => {
    const { replies, send } = setup(3 * MiB);
    send(abi.FUSE_LOOKUP, abi.FUSE_ROOT_ID, Buffer.from(`${DISK_FILE_NAME}\0`));
    send(abi.FUSE_LOOKUP, abi.FUSE_ROOT_ID, Buffer.from('other\0'));
    send(abi.FUSE_GETATTR, FILE_NODE_ID, Buffer.alloc(16));
    send(abi.FUSE_GETATTR, abi.FUSE_ROOT_ID, Buffer.alloc(16));
    send(abi.FUSE_READDIR, abi.FUSE_ROOT_ID, rwBody(0, 4096));
    const [entry, missing, fileAttr, rootAttr, dir] = replies;
    expect(entry!.body.readBigUInt64LE(0)).toBe(FILE_NODE_ID);
    expect(entry!.body.readBigUInt64LE(40 + 8)).toBe(BigInt(3 * MiB));
    expect(missing!.error).toBe(-abi.ENOENT);
    expect(fileAttr!.body.readBigUInt64LE(16 + 8)).toBe(BigInt(3 * MiB));
    expect(fileAttr!.body.readUInt32LE(16 + 60)).toBe(abi.S_IFREG | 0o600);
    expect(rootAttr!.body.readUInt32LE(16 + 60)).toBe(abi.S_IFDIR | 0o755);
    expect(dir!.body.length).toBe(96);
  });

  it('OPEN answers with direct I/O; a read-only export refuses opens for writing', () => {
    const { backend, replies, send } = setup();
    const open = (flags: number): Buffer => {
      const b = Buffer.alloc(8);
      b.writeUInt32LE(flags, 0);
      return b;
    };
    send(abi.FUSE_OPEN, FILE_NODE_ID, open(2));
    expect(replies[0]!.body.readUInt32LE(8)).toBe(abi.FOPEN_DIRECT_IO | abi.FOPEN_PARALLEL_DIRECT_WRITES);
    backend.readOnly = true;
    send(abi.FUSE_OPEN, FILE_NODE_ID, open(2));
    send(abi.FUSE_OPEN, FILE_NODE_ID, open(0));
    expect(replies[1]!.error).toBe(-abi.EROFS);
    expect(replies[2]!.error).toBe(0);
  });

  it('WRITE copies its data before returning; READ returns it, and stops short at the end of the file', async () => {
    const { backend, replies, send } = setup(MiB);
    const data = Buffer.alloc(8192, 0x5a);
    let release!: () => void;
    backend.gate = new Promise((r) => (release = r));
    const w = send(abi.FUSE_WRITE, FILE_NODE_ID, rwBody(4096, data.length, data)); // request buffer overwritten right after
    release();
    await flush();
    expect(replies.find((r) => r.unique === w)?.body.readUInt32LE(0)).toBe(8192);
    const full = send(abi.FUSE_READ, FILE_NODE_ID, rwBody(4096, 8192));
    const short = send(abi.FUSE_READ, FILE_NODE_ID, rwBody(MiB - 100, 4096));
    const past = send(abi.FUSE_READ, FILE_NODE_ID, rwBody(MiB, 4096));
    await flush();
    const body = (u: bigint): Buffer | undefined => replies.find((r) => r.unique === u)?.body;
    expect(body(full)?.equals(data)).toBe(true);
    expect(body(short)?.length).toBe(100);
    expect(body(past)?.length).toBe(0);
  });

  it('WRITE past the end is ENOSPC; a backend failure is its errno', async () => {
    const { backend, replies, send } = setup(MiB);
    send(abi.FUSE_WRITE, FILE_NODE_ID, rwBody(MiB - 10, 20, Buffer.alloc(20)));
    expect(replies[0]!.error).toBe(-abi.ENOSPC);
    backend.fail = new BlockIoError(abi.EIO, 'the engine is unreachable');
    send(abi.FUSE_WRITE, FILE_NODE_ID, rwBody(0, 20, Buffer.alloc(20)));
    send(abi.FUSE_FSYNC, FILE_NODE_ID, Buffer.alloc(16));
    await flush();
    expect(replies.slice(1).map((r) => r.error)).toEqual([-abi.EIO, -abi.EIO]);
  });

  it('FSYNC is a flush of the backend; FLUSH (close) and RELEASE are not', async () => {
    const { backend, replies, send } = setup();
    send(abi.FUSE_FLUSH, FILE_NODE_ID, Buffer.alloc(24));
    send(abi.FUSE_RELEASE, FILE_NODE_ID, Buffer.alloc(24));
    expect(backend.flushes).toBe(0);
    send(abi.FUSE_FSYNC, FILE_NODE_ID, Buffer.alloc(16));
    await flush();
    expect(backend.flushes).toBe(1);
    expect(replies.map((r) => r.error)).toEqual([0, 0, 0]);
  });

  it('SETATTR refuses a size change (EPERM) and accepts the rest as a no-op', () => {
    const { replies, send } = setup(MiB);
    const setattr = (valid: number, size: number): Buffer => {
      const b = Buffer.alloc(88);
      b.writeUInt32LE(valid, 0);
      b.writeBigUInt64LE(BigInt(size), 16);
      return b;
    };
    send(abi.FUSE_SETATTR, FILE_NODE_ID, setattr(abi.FATTR_SIZE, 0));
    send(abi.FUSE_SETATTR, FILE_NODE_ID, setattr(abi.FATTR_SIZE, MiB));
    send(abi.FUSE_SETATTR, FILE_NODE_ID, setattr(1 /* mode */, 0));
    expect(replies.map((r) => r.error)).toEqual([-abi.EPERM, 0, 0]);
  });

  it('FALLOCATE punch-hole and zero-range zero the range (clamped to the file); plain allocate is a no-op; growing is refused', async () => {
    const { backend, replies, send } = setup(MiB);
    backend.data.fill(0xff);
    const sent = [
      send(abi.FUSE_FALLOCATE, FILE_NODE_ID, fallocBody(4096, 4096, abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_KEEP_SIZE)),
      send(abi.FUSE_FALLOCATE, FILE_NODE_ID, fallocBody(MiB - 4096, 8192, abi.FALLOC_FL_ZERO_RANGE | abi.FALLOC_FL_KEEP_SIZE)),
      send(abi.FUSE_FALLOCATE, FILE_NODE_ID, fallocBody(0, 4096, 0)),
      send(abi.FUSE_FALLOCATE, FILE_NODE_ID, fallocBody(MiB, 4096, 0)),
      send(abi.FUSE_FALLOCATE, FILE_NODE_ID, fallocBody(0, 4096, 0x08 /* collapse range */)),
    ];
    await flush();
    expect(sent.map((u) => replies.find((r) => r.unique === u)?.error)).toEqual([0, 0, 0, -abi.EOPNOTSUPP, -abi.EOPNOTSUPP]);
    expect(backend.data.subarray(4096, 8192).every((x) => x === 0)).toBe(true);
    expect(backend.data.subarray(MiB - 4096).every((x) => x === 0)).toBe(true);
    expect(backend.data[0]).toBe(0xff);
  });

  it('FORGET gets no reply, INTERRUPT gets ENOSYS, creating anything gets EPERM, the rest ENOSYS', () => {
    const { replies, send } = setup();
    send(abi.FUSE_FORGET, FILE_NODE_ID, Buffer.alloc(8));
    send(abi.FUSE_BATCH_FORGET, 0n, Buffer.alloc(8));
    expect(replies).toEqual([]);
    send(abi.FUSE_INTERRUPT, 0n, Buffer.alloc(8));
    send(abi.FUSE_MKDIR, abi.FUSE_ROOT_ID, Buffer.from('x\0'));
    send(abi.FUSE_UNLINK, abi.FUSE_ROOT_ID, Buffer.from('disk\0'));
    send(22 /* GETXATTR */, FILE_NODE_ID, Buffer.alloc(16));
    expect(replies.map((r) => r.error)).toEqual([-abi.ENOSYS, -abi.EPERM, -abi.EPERM, -abi.ENOSYS]);
  });

  it('sizeChanged tells the kernel (after INIT) with an attribute-only invalidation of the file', async () => {
    const { fs, notes, send } = setup();
    await fs.sizeChanged();
    expect(notes).toEqual([]); // before INIT there is nothing to tell
    send(abi.FUSE_INIT, 0n, initBody(45, ALL_FLAGS));
    await fs.sizeChanged();
    expect(notes.length).toBe(1);
    expect([notes[0]!.readInt32LE(4), notes[0]!.readBigUInt64LE(16), notes[0]!.readBigInt64LE(24)]).toEqual([abi.FUSE_NOTIFY_INVAL_INODE, FILE_NODE_ID, -1n]);
  });
});
