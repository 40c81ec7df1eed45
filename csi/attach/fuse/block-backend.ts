/**
 * What the FUSE filesystem needs from the storage behind its file: the NBD client implements it,
 * and the filesystem's unit tests use an in-memory one. Failures are BlockIoError with a Linux
 * errno, which the filesystem returns to the kernel as it is.
 */

export class BlockIoError extends Error {
  /** A Linux errno (positive). */
  readonly errno: number;

  constructor(errno: number, message: string) {
    super(message);
    this.name = 'BlockIoError';
    this.errno = errno;
  }
}

export interface BlockBackend {
  /** The size now; it may grow while mounted. */
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  /** Whether writeZeroes is available (FALLOCATE punch-hole / zero-range). */
  readonly canWriteZeroes: boolean;
  /** Fills `dest` with the bytes at `offset`. */
  read(offset: number, dest: Buffer): Promise<void>;
  /** Writes `data` at `offset`; the backend may keep `data`, so the caller must not reuse it. */
  write(offset: number, data: Buffer): Promise<void>;
  /** The range reads as zeros afterwards. */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Every write completed before this call is durable when it resolves. */
  flush(): Promise<void>;
}
