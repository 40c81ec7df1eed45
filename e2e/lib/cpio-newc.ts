/**
 * Writes cpio archives in the "newc" format (the SVR4 portable ASCII format, magic 070701), the
 * one the Linux kernel unpacks as an initramfs. Written here rather than driven through `cpio -o`
 * so that an archive is built from memory: entries can be device nodes and symlinks without a
 * staging directory, and without root, and the same bytes come out on every machine.
 *
 * Layout of one entry: a 110-byte header (the magic, then 13 fields of 8 hex digits), the name
 * with its NUL, padding to a multiple of 4, the data, padding to a multiple of 4. The archive
 * ends with an entry named TRAILER!!!.
 */

const MAGIC = '070701';
const HEADER_BYTES = 110;

// File type bits of st_mode.
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Uint8Array; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Builds an archive from `entries`, in order (a directory must come before what it holds). */
export function buildCpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (name: string, mode: number, data: Uint8Array, rdevMajor = 0, rdevMinor = 0, nlink = 1): void => {
    // The kernel's unpacker and GNU cpio both expect paths relative to the root, without "/".
    const nameBytes = Buffer.from(`${name.replace(/^\/+/, '')}\0`, 'utf8');
    const header =
      MAGIC +
      [ino++, mode, 0, 0, nlink, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBytes.length, 0].map(hex8).join('');
    parts.push(Buffer.from(header, 'ascii'), nameBytes, Buffer.alloc(pad4(HEADER_BYTES + nameBytes.length)));
    if (data.length > 0) parts.push(Buffer.from(data.buffer, data.byteOffset, data.length), Buffer.alloc(pad4(data.length)));
  };
  for (const e of entries) {
    switch (e.kind) {
      case 'dir':
        push(e.path, S_IFDIR | (e.mode ?? 0o755), new Uint8Array(0), 0, 0, 2);
        break;
      case 'file':
        push(e.path, S_IFREG | (e.mode ?? 0o644), e.data);
        break;
      case 'symlink':
        push(e.path, S_IFLNK | 0o777, Buffer.from(e.target, 'utf8'));
        break;
      case 'chardev':
        push(e.path, S_IFCHR | (e.mode ?? 0o600), new Uint8Array(0), e.major, e.minor);
        break;
    }
  }
  ino = 0;
  push('TRAILER!!!', 0, new Uint8Array(0), 0, 0, 1);
  return Buffer.concat(parts);
}
