/**
 * What a block front end (the NBD server) needs from the engine: one open volume, addressed in
 * bytes. The engine validates every range itself (OUT_OF_RANGE, INVALID_ARGUMENT), so a front
 * end may pass client values through unchanged; it must still bound request lengths itself
 * before allocating buffers.
 *
 * Durability contract: `write`, `trim` and `writeZeroes` resolve once the change is visible to
 * every later read on any connection; it is durable only after a later `flush()` resolves, or
 * at once when called with `fua`. One flush covers every volume of the pool (one shared log),
 * which is why the NBD server may advertise NBD_FLAG_CAN_MULTI_CONN.
 */

export const BLOCK_SIZE = 4096;

/** One run of the allocation map returned by blockStatus (NBD base:allocation). */
export interface AllocationExtent {
  lengthBytes: number;
  /** Unallocated: reads return zeros and no space is used. */
  hole: boolean;
  /** Reads are known to return zeros. */
  zero: boolean;
}

export interface BlockDevice {
  readonly name: string;
  /** Current size; may grow while the device is open (online resize). */
  readonly sizeBytes: number;
  readonly readOnly: boolean;

  /**
   * Fills every byte of `dest` with the volume's bytes at `offset`, or rejects: a front end may
   * hand in uninitialised memory, which must never reach a client.
   */
  read(offset: number, dest: Buffer): Promise<void>;
  /**
   * The engine copies `src` before write() returns (synchronously), so the caller may reuse the
   * buffer as soon as the call returns, without waiting for the promise.
   */
  write(offset: number, src: Buffer, fua: boolean): Promise<void>;
  /** Resolves when every write acknowledged before the call is on stable storage. */
  flush(): Promise<void>;
  /**
   * Unmaps the whole blocks inside the range (later reads return zeros); partial blocks at
   * unaligned edges are left unchanged, as NBD allows for TRIM.
   */
  trim(offset: number, lengthBytes: number, fua: boolean): Promise<void>;
  /**
   * Makes the range read as zeros. With `mayUnmap` the engine may deallocate (the default NBD
   * behaviour unless NBD_CMD_FLAG_NO_HOLE is set).
   */
  writeZeroes(offset: number, lengthBytes: number, opts: { fua: boolean; mayUnmap: boolean }): Promise<void>;
  /** The allocation map of [offset, offset+lengthBytes), merged into at most `maxExtents` runs. */
  blockStatus(offset: number, lengthBytes: number, maxExtents: number): AllocationExtent[];
  /** Releases this handle; the volume cannot be removed while handles are open. */
  close(): void;
}

/** How a front end finds exports by name. */
export interface ExportProvider {
  /** Opens a handle to the named volume; throws EngineError NOT_FOUND if there is none. */
  openExport(name: string): BlockDevice;
  /** Names of every export, for NBD_OPT_LIST. */
  listExports(): string[];
}
