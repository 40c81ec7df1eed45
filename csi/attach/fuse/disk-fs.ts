/**
 * The filesystem braid-fuse serves: a root directory holding one regular file, the export, whose
 * size is the export's size. A loop device over that file is the block device (fuse-attacher.ts).
 *
 *   /            node 1, directory, 0755
 *   /disk        node 2, regular file, 0600 (0400 for a read-only export)
 *
 * Nothing else can be created, renamed or removed (EPERM), and the size cannot be set (EPERM):
 * it follows the volume, and grows when the attacher asks braid-fuse to look again.
 *
 * Open flags: FOPEN_DIRECT_IO. The kernel then sends every read and write of the file to us
 * instead of going through a page cache of the FUSE file. Reasons:
 *   - the loop device on top has its own page cache (the block device's), so caching the FUSE
 *     file too would hold every block twice, for nothing;
 *   - with no cache here there is nothing to invalidate when the file grows, and no dirty pages
 *     of ours that could be written back after an FSYNC returned;
 *   - with FOPEN_PARALLEL_DIRECT_WRITES, concurrent writes are not serialised on the inode lock.
 * Durability does not depend on this choice: a WRITE is answered once the engine acknowledged
 * it, and FSYNC (what the loop device sends for a flush or FUA request) becomes NBD FLUSH, which
 * covers every write acknowledged before it; the NBD client keeps those writes for a replay
 * until a FLUSH covers them (replay-log.ts). With the page cache instead, FUSE writes through
 * synchronously (no writeback cache is negotiated) and fsync waits for the pages before FSYNC,
 * so the same guarantee would hold; we just would not gain anything for the memory.
 *
 * FALLOCATE punch-hole and zero-range become NBD WRITE_ZEROES rather than TRIM: after either,
 * the file must read as zeros, which TRIM does not promise (NBD lets trimmed bytes read as
 * anything). The loop device sends them for discard and write-zeroes requests.
 */
import type { BlockBackend } from './block-backend.ts';
import { BlockIoError } from './block-backend.ts';
import * as abi from './fuse-abi.ts';
import {
  decodeFallocate,
  decodeInit,
  decodeName,
  decodeOpenFlags,
  decodeRead,
  decodeReaddir,
  decodeSetattr,
  decodeWrite,
  encodeAttrReply,
  encodeEntryReply,
  encodeInitReply,
  encodeInvalInodeNotify,
  encodeOpenReply,
  encodeReaddirReply,
  encodeStatfsReply,
  encodeWriteReply,
  replyBuffer,
  writeOutHeader,
} from './fuse-codec.ts';
import type { Attr, Dirent, InHeader, Validity } from './fuse-codec.ts';
import { BufferPool } from './buffer-pool.ts';

export const FILE_NODE_ID = 2n;
/** The one file's name inside the mount point. */
export const DISK_FILE_NAME = 'disk';
/**
 * The kernel may cache names and attributes this long. Nothing changes behind its back except
 * the size, and a size change is announced (FUSE_NOTIFY_INVAL_INODE).
 */
const VALIDITY: Validity = { entrySec: 3600, attrSec: 3600 };
/** Requests the kernel may queue in the background (readahead, async direct I/O). */
const MAX_BACKGROUND = 64;
const CONGESTION_THRESHOLD = 48;
const PAGE_BYTES = 4096;
/** WRITE_ZEROES requests are split at this size (NBD lengths are 32-bit). */
const ZERO_CHUNK_BYTES = 1 << 30;
const O_ACCMODE = 3;
const O_RDONLY = 0;

/** The replies and notifications the filesystem sends; FuseSession implements it. */
export interface FuseReplier {
  reply(message: Buffer): void;
  replyError(unique: bigint, errno: number): void;
  notify(message: Buffer): Promise<void>;
}

export interface DiskFsLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface DiskFsOptions {
  backend: BlockBackend;
  replier: FuseReplier;
  logger: DiskFsLogger;
  /** The largest WRITE we accept (negotiated at INIT); a multiple of the page size. */
  maxWriteBytes: number;
  uid: number;
  gid: number;
}

export class DiskFilesystem {
  readonly #backend: BlockBackend;
  readonly #replier: FuseReplier;
  readonly #log: DiskFsLogger;
  readonly #maxWriteBytes: number;
  readonly #uid: number;
  readonly #gid: number;
  readonly #timeSec = Math.floor(Date.now() / 1000);
  readonly #readBuffers: BufferPool;
  #initialized = false;
  #initResolve!: () => void;
  #initReject!: (err: Error) => void;
  /** Resolves once the kernel's INIT was answered; rejects if it was refused. */
  readonly initialized: Promise<void>;

  constructor(opts: DiskFsOptions) {
    this.#backend = opts.backend;
    this.#replier = opts.replier;
    this.#log = opts.logger;
    this.#maxWriteBytes = opts.maxWriteBytes;
    this.#uid = opts.uid;
    this.#gid = opts.gid;
    this.#readBuffers = new BufferPool(abi.OUT_HEADER_BYTES + opts.maxWriteBytes);
    this.initialized = new Promise((resolve, reject) => {
      this.#initResolve = resolve;
      this.#initReject = reject;
    });
    this.initialized.catch(() => undefined); // the caller awaits it; no unhandled rejection meanwhile
  }

  /** Tells the kernel the file's size changed: its next stat (and `losetup -c`) sees the new one. */
  async sizeChanged(): Promise<void> {
    if (!this.#initialized) return;
    try {
      await this.#replier.notify(encodeInvalInodeNotify(FILE_NODE_ID));
    } catch (err) {
      // ENOENT: the kernel has not looked the file up yet, so it caches nothing to invalidate.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  handle(h: InHeader, buf: Buffer, at: number, bodyBytes: number): void {
    switch (h.opcode) {
      case abi.FUSE_INIT:
        return this.#init(h, buf, at, bodyBytes);
      case abi.FUSE_LOOKUP:
        return this.#lookup(h, decodeName(buf, at, bodyBytes));
      case abi.FUSE_GETATTR:
        return this.#getattr(h);
      case abi.FUSE_SETATTR:
        return this.#setattr(h, buf, at, bodyBytes);
      case abi.FUSE_OPEN:
        return this.#open(h, decodeOpenFlags(buf, at, bodyBytes));
      case abi.FUSE_OPENDIR:
        return this.#opendir(h);
      case abi.FUSE_READ:
        return this.#read(h, buf, at, bodyBytes);
      case abi.FUSE_WRITE:
        return this.#write(h, buf, at, bodyBytes);
      case abi.FUSE_READDIR:
        return this.#readdir(h, buf, at, bodyBytes);
      case abi.FUSE_STATFS:
        return this.#reply(encodeStatfsReply(h.unique, { blocks: Math.ceil(this.#backend.sizeBytes / PAGE_BYTES), blockBytes: PAGE_BYTES, files: 2 }));
      case abi.FUSE_FSYNC:
        return this.#complete(h, this.#backend.flush());
      case abi.FUSE_FALLOCATE:
        return this.#fallocate(h, buf, at, bodyBytes);
      case abi.FUSE_RELEASE:
      case abi.FUSE_RELEASEDIR:
      case abi.FUSE_FLUSH: // close(2): nothing is cached here, and close does not promise durability
      case abi.FUSE_FSYNCDIR:
        return this.#reply(replyBuffer(h.unique, 0));
      case abi.FUSE_FORGET:
      case abi.FUSE_BATCH_FORGET:
        return; // no reply: our two nodes live as long as the mount
      case abi.FUSE_INTERRUPT:
        // Block I/O is not interruptible here; ENOSYS tells the kernel to stop sending these.
        return this.#replier.replyError(h.unique, abi.ENOSYS);
      case abi.FUSE_DESTROY:
        return this.#reply(replyBuffer(h.unique, 0));
      case abi.FUSE_MKNOD:
      case abi.FUSE_MKDIR:
      case abi.FUSE_SYMLINK:
      case abi.FUSE_UNLINK:
      case abi.FUSE_RMDIR:
      case abi.FUSE_RENAME:
      case abi.FUSE_RENAME2:
      case abi.FUSE_LINK:
      case abi.FUSE_CREATE:
      case abi.FUSE_TMPFILE:
        return this.#replier.replyError(h.unique, abi.EPERM); // the layout is fixed
      default:
        // xattrs, locks, ioctl, poll, lseek, statx, ...: the kernel falls back or reports it.
        return this.#replier.replyError(h.unique, abi.ENOSYS);
    }
  }

  #reply(message: Buffer): void {
    this.#replier.reply(message);
  }

  #init(h: InHeader, buf: Buffer, at: number, bodyBytes: number): void {
    const init = decodeInit(buf, at, bodyBytes);
    const tooOld = init.major < abi.FUSE_KERNEL_VERSION || (init.major === abi.FUSE_KERNEL_VERSION && init.minor < abi.FUSE_MIN_KERNEL_MINOR);
    if (tooOld || (init.flags & abi.FUSE_MAX_PAGES) === 0) {
      this.#replier.replyError(h.unique, abi.EPROTO);
      this.#initReject(new Error(`the kernel speaks FUSE ${init.major}.${init.minor}; braid-fuse needs 7.${abi.FUSE_MIN_KERNEL_MINOR} or later`));
      return;
    }
    // A newer major version: answer with ours and the kernel falls back to it (fuse.h, "Version negotiation").
    const wanted = abi.FUSE_ASYNC_READ | abi.FUSE_BIG_WRITES | abi.FUSE_ASYNC_DIO | abi.FUSE_MAX_PAGES;
    this.#reply(
      encodeInitReply(h.unique, {
        major: abi.FUSE_KERNEL_VERSION,
        minor: Math.min(init.minor, abi.FUSE_OUR_MINOR_VERSION),
        maxReadahead: init.maxReadahead,
        flags: init.flags & wanted,
        maxBackground: MAX_BACKGROUND,
        congestionThreshold: CONGESTION_THRESHOLD,
        maxWrite: this.#maxWriteBytes,
        timeGranNs: 1,
        maxPages: this.#maxWriteBytes / PAGE_BYTES,
      }),
    );
    if (init.major !== abi.FUSE_KERNEL_VERSION) return; // a second INIT follows
    this.#initialized = true;
    this.#log.info({ kernel: `${init.major}.${init.minor}`, maxWriteBytes: this.#maxWriteBytes }, 'FUSE session initialised');
    this.#initResolve();
  }

  #attr(node: bigint): Attr | undefined {
    if (node === abi.FUSE_ROOT_ID) {
      return { ino: node, sizeBytes: 0, mode: abi.S_IFDIR | 0o755, nlink: 2, uid: this.#uid, gid: this.#gid, timeSec: this.#timeSec, blksize: PAGE_BYTES };
    }
    if (node === FILE_NODE_ID) {
      const mode = abi.S_IFREG | (this.#backend.readOnly ? 0o400 : 0o600);
      return { ino: node, sizeBytes: this.#backend.sizeBytes, mode, nlink: 1, uid: this.#uid, gid: this.#gid, timeSec: this.#timeSec, blksize: PAGE_BYTES };
    }
    return undefined;
  }

  #lookup(h: InHeader, name: string): void {
    if (h.nodeId !== abi.FUSE_ROOT_ID || name !== DISK_FILE_NAME) return this.#replier.replyError(h.unique, abi.ENOENT);
    this.#reply(encodeEntryReply(h.unique, this.#attr(FILE_NODE_ID)!, VALIDITY));
  }

  #getattr(h: InHeader): void {
    const attr = this.#attr(h.nodeId);
    if (attr === undefined) return this.#replier.replyError(h.unique, abi.ENOENT);
    this.#reply(encodeAttrReply(h.unique, attr, VALIDITY));
  }

  #setattr(h: InHeader, buf: Buffer, at: number, bodyBytes: number): void {
    const set = decodeSetattr(buf, at, bodyBytes);
    const attr = this.#attr(h.nodeId);
    if (attr === undefined) return this.#replier.replyError(h.unique, abi.ENOENT);
    // The size is the volume's: truncate and O_TRUNC are refused. Owner, mode and times are
    // not kept (the kernel checks permissions from what GETATTR says), so setting them is a no-op.
    if ((set.valid & abi.FATTR_SIZE) !== 0 && set.size !== attr.sizeBytes) return this.#replier.replyError(h.unique, abi.EPERM);
    this.#reply(encodeAttrReply(h.unique, attr, VALIDITY));
  }

  #open(h: InHeader, flags: number): void {
    if (h.nodeId === abi.FUSE_ROOT_ID) return this.#replier.replyError(h.unique, abi.EISDIR)
    if (h.nodeId !== FILE_NODE_ID) return this.#replier.replyError(h.unique, abi.ENOENT);
    if (this.#backend.readOnly && (flags & O_ACCMODE) !== O_RDONLY) return this.#replier.replyError(h.unique, abi.EROFS);
    this.#reply(encodeOpenReply(h.unique, 0n, abi.FOPEN_DIRECT_IO | abi.FOPEN_PARALLEL_DIRECT_WRITES));
  }

  #opendir(h: InHeader): void {
    if (h.nodeId !== abi.FUSE_ROOT_ID) return this.#replier.replyError(h.unique, abi.ENOTDIR)
    this.#reply(encodeOpenReply(h.unique, 0n, 0));
  }

  #readdir(h: InHeader, buf: Buffer, at: number, bodyBytes: number): void {
    const { offset, size } = decodeReaddir(buf, at, bodyBytes);
    const entries: Dirent[] = [
      { ino: abi.FUSE_ROOT_ID, name: '.', type: abi.DT_DIR },
      { ino: abi.FUSE_ROOT_ID, name: '..', type: abi.DT_DIR },
      { ino: FILE_NODE_ID, name: DISK_FILE_NAME, type: abi.DT_REG },
    ];
    this.#reply(encodeReaddirReply(h.unique, entries, Math.min(offset, entries.length), size));
  }

  #read(h: InHeader, buf: Buffer, at: number, bodyBytes: number): void {
    const { offset, size } = decodeRead(buf, at, bodyBytes);
    if (h.nodeId !== FILE_NODE_ID) return this.#replier.replyError(h.unique, abi.EBADF);
    const fileBytes = this.#backend.sizeBytes;
    // Past the end: a short (or empty) read, as for any file.
    const length = offset >= fileBytes ? 0 : Math.min(size, fileBytes - offset);
    if (length === 0) return this.#reply(replyBuffer(h.unique, 0));
    if (length > this.#maxWriteBytes) return this.#replier.replyError(h.unique, abi.EINVAL); // larger than max_pages allows
    const reply = this.#readBuffers.take();
    this.#backend.read(offset, reply.subarray(abi.OUT_HEADER_BYTES, abi.OUT_HEADER_BYTES + length)).then(
      () => {
        writeOutHeader(reply, abi.OUT_HEADER_BYTES + length, 0, h.unique);
        this.#reply(reply.subarray(0, abi.OUT_HEADER_BYTES + length));
        this.#readBuffers.give(reply);
      },
      (err: unknown) => {
        this.#readBuffers.give(reply);
        this.#fail(h, err);
      },
    );
  }

  #write(h: InHeader, buf: Buffer, at: number, bodyBytes: number): void {
    const { offset, size, dataAt } = decodeWrite(buf, at, bodyBytes);
    if (h.nodeId !== FILE_NODE_ID) return this.#replier.replyError(h.unique, abi.EBADF);
    if (this.#backend.readOnly) return this.#replier.replyError(h.unique, abi.EROFS);
    // Like a block device: no writing past the end.
    if (offset + size > this.#backend.sizeBytes) return this.#replier.replyError(h.unique, abi.ENOSPC);
    if (size === 0) return this.#reply(encodeWriteReply(h.unique, 0));
    // A copy the NBD client may keep for a replay; the request buffer is read into again at once.
    const data = Buffer.allocUnsafeSlow(size);
    buf.copy(data, 0, dataAt, dataAt + size);
    this.#backend.write(offset, data).then(
      () => this.#reply(encodeWriteReply(h.unique, size)),
      (err: unknown) => this.#fail(h, err),
    );
  }

  #fallocate(h: InHeader, buf: Buffer, at: number, bodyBytes: number): void {
    const { offset, length, mode } = decodeFallocate(buf, at, bodyBytes);
    if (h.nodeId !== FILE_NODE_ID) return this.#replier.replyError(h.unique, abi.EBADF);
    const known = abi.FALLOC_FL_KEEP_SIZE | abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_ZERO_RANGE;
    if ((mode & ~known) !== 0) return this.#replier.replyError(h.unique, abi.EOPNOTSUPP);
    const fileBytes = this.#backend.sizeBytes;
    const keepSize = (mode & abi.FALLOC_FL_KEEP_SIZE) !== 0;
    // The size is the volume's: nothing may extend the file.
    if (!keepSize && offset + length > fileBytes) return this.#replier.replyError(h.unique, abi.EOPNOTSUPP);
    const zeroes = (mode & (abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_ZERO_RANGE)) !== 0;
    // Plain allocation: a thin volume reads and writes every byte already.
    if (!zeroes) return this.#reply(replyBuffer(h.unique, 0));
    if (this.#backend.readOnly) return this.#replier.replyError(h.unique, abi.EROFS);
    if (!this.#backend.canWriteZeroes) return this.#replier.replyError(h.unique, abi.EOPNOTSUPP);
    const end = Math.min(offset + length, fileBytes);
    this.#complete(h, this.#zero(offset, end));
  }

  async #zero(offset: number, end: number): Promise<void> {
    for (let at = offset; at < end; at += ZERO_CHUNK_BYTES) await this.#backend.writeZeroes(at, Math.min(ZERO_CHUNK_BYTES, end - at));
  }

  /** Replies with an empty success when `work` succeeds, with its errno when it fails. */
  #complete(h: InHeader, work: Promise<void>): void {
    work.then(
      () => this.#reply(replyBuffer(h.unique, 0)),
      (err: unknown) => this.#fail(h, err),
    );
  }

  #fail(h: InHeader, err: unknown): void {
    if (err instanceof BlockIoError) {
      this.#replier.replyError(h.unique, err.errno);
      return;
    }
    this.#log.error({ err, opcode: h.opcode }, 'unexpected failure serving a FUSE request; answering EIO');
    this.#replier.replyError(h.unique, abi.EIO);
  }
}
