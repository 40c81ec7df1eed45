/**
 * The FUSE kernel protocol, as far as Braid's FUSE server uses it: opcodes, flags and the byte
 * sizes of the structures (include/uapi/linux/fuse.h, protocol 7.x). Every field is little
 * endian on x86-64 and arm64, the only architectures we run on, and every structure is padded
 * to 8 bytes. Encoding and decoding live in fuse-codec.ts; this module holds only facts.
 */

/** The major version we speak; a kernel offering another one is refused at INIT. */
export const FUSE_KERNEL_VERSION = 7;
/** The minor version we answer with: the fields we send are those of 7.38. */
export const FUSE_OUR_MINOR_VERSION = 38;
/**
 * The oldest kernel minor we serve: 7.28 (Linux 4.20) brought FUSE_MAX_PAGES, without which a
 * request carries at most 32 pages and a 1 MiB max_write means nothing.
 */
export const FUSE_MIN_KERNEL_MINOR = 28;

/** The root directory's node id, fixed by the protocol. */
export const FUSE_ROOT_ID = 1n;

// ---- Opcodes ------------------------------------------------------------------------------

export const FUSE_LOOKUP = 1;
/** No reply. */
export const FUSE_FORGET = 2;
export const FUSE_GETATTR = 3;
export const FUSE_SETATTR = 4;
export const FUSE_READLINK = 5;
export const FUSE_SYMLINK = 6;
export const FUSE_MKNOD = 8;
export const FUSE_MKDIR = 9;
export const FUSE_UNLINK = 10;
export const FUSE_RMDIR = 11;
export const FUSE_RENAME = 12;
export const FUSE_LINK = 13;
export const FUSE_OPEN = 14;
export const FUSE_READ = 15;
export const FUSE_WRITE = 16;
export const FUSE_STATFS = 17;
export const FUSE_RELEASE = 18;
export const FUSE_FSYNC = 20;
export const FUSE_FLUSH = 25;
export const FUSE_INIT = 26;
export const FUSE_OPENDIR = 27;
export const FUSE_READDIR = 28;
export const FUSE_RELEASEDIR = 29;
export const FUSE_FSYNCDIR = 30;
export const FUSE_CREATE = 35;
export const FUSE_INTERRUPT = 36;
export const FUSE_DESTROY = 38;
/** No reply. */
export const FUSE_BATCH_FORGET = 42;
export const FUSE_FALLOCATE = 43;
export const FUSE_RENAME2 = 45;
export const FUSE_TMPFILE = 51;

/** Notification codes, sent as the `error` field of an out header whose unique is 0. */
export const FUSE_NOTIFY_INVAL_INODE = 2;

/** INTERRUPT requests carry the interrupted request's unique with this bit set. */
export const FUSE_INT_REQ_BIT = 1n;

// ---- INIT flags (fuse_init_in.flags / fuse_init_out.flags) --------------------------------

/** Several READs of one file may be in flight at once. */
export const FUSE_ASYNC_READ = 1 << 0;
/** Writes larger than a page (implied since 2.6.26; still set for old kernels). */
export const FUSE_BIG_WRITES = 1 << 5;
/** Direct I/O from an asynchronous kiocb (loop with --direct-io=on) may be split and sent in parallel. */
export const FUSE_ASYNC_DIO = 1 << 15;
/** The max_pages field of INIT's reply is valid. */
export const FUSE_MAX_PAGES = 1 << 22;

// ---- OPEN reply flags (fuse_open_out.open_flags) ------------------------------------------

/** Bypass the page cache for this open file: every read and write reaches the server. */
export const FOPEN_DIRECT_IO = 1 << 0;
/** Direct writes to the file need not take the inode lock exclusively (7.37). */
export const FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6;

// ---- SETATTR valid bits -------------------------------------------------------------------

export const FATTR_SIZE = 1 << 3;

// ---- FALLOCATE modes (linux/falloc.h) -----------------------------------------------------

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

// ---- Structure sizes ----------------------------------------------------------------------

/** fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding. */
export const IN_HEADER_BYTES = 40;
/** fuse_out_header: len, error, unique. */
export const OUT_HEADER_BYTES = 16;
/** fuse_init_in up to flags (the part every kernel sends). */
export const INIT_IN_MIN_BYTES = 16;
/** fuse_init_out as of 7.23 and later. */
export const INIT_OUT_BYTES = 64;
/** fuse_attr. */
export const ATTR_BYTES = 88;
/** fuse_entry_out: nodeid, generation, entry_valid, attr_valid, two nsec fields, fuse_attr. */
export const ENTRY_OUT_BYTES = 40 + ATTR_BYTES;
/** fuse_attr_out: attr_valid, attr_valid_nsec, dummy, fuse_attr. */
export const ATTR_OUT_BYTES = 16 + ATTR_BYTES;
/** fuse_setattr_in. */
export const SETATTR_IN_BYTES = 88;
/** fuse_open_out: fh, open_flags, padding (backing_id in newer headers). */
export const OPEN_OUT_BYTES = 16;
/** fuse_read_in and fuse_write_in share a size; write data follows fuse_write_in. */
export const READ_IN_BYTES = 40;
export const WRITE_IN_BYTES = 40;
/** fuse_write_out: size, padding. */
export const WRITE_OUT_BYTES = 8;
/** fuse_fsync_in: fh, fsync_flags, padding. */
export const FSYNC_IN_BYTES = 16;
/** fuse_fallocate_in: fh, offset, length, mode, padding. */
export const FALLOCATE_IN_BYTES = 32;
/** fuse_statfs_out (fuse_kstatfs): five u64, bsize, namelen, frsize, padding, spare[6]. */
export const STATFS_OUT_BYTES = 80;
/** fuse_dirent before its name: ino, off, namelen, type. */
export const DIRENT_HEADER_BYTES = 24;
/** fuse_notify_inval_inode_out: ino, off, len. */
export const NOTIFY_INVAL_INODE_BYTES = 24;
/** fuse_interrupt_in: unique. */
export const INTERRUPT_IN_BYTES = 8;

/** The kernel refuses a /dev/fuse read buffer smaller than this (FUSE_MIN_READ_BUFFER). */
export const FUSE_MIN_READ_BUFFER = 8192;

// ---- File types and errno (Linux values; the protocol carries negative errno) ------------

export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
/** d_type values of dirents. */
export const DT_DIR = 4;
export const DT_REG = 8;

export const EPERM = 1;
export const ENOENT = 2;
export const EIO = 5;
export const EBADF = 9;
export const ENOMEM = 12;
export const EACCES = 13;
export const ENOTDIR = 20;
export const EISDIR = 21;
export const EINVAL = 22;
export const EFBIG = 27;
export const ENOSPC = 28;
export const EROFS = 30;
export const EPROTO = 71;
export const ENOSYS = 38;
export const EOVERFLOW = 75;
export const EOPNOTSUPP = 95;
export const ESHUTDOWN = 108;
