/**
 * The log writer: one append-only stream of records for every volume of the pool, with group
 * commit (LevelDB's way, without a leader thread since Node is single-threaded):
 *
 *   - writes are copied into the open batch as they arrive and are readable from it at once;
 *   - when the writer is idle the open batch is sealed on the next turn of the event loop and
 *     written with one pwrite; writes that arrive meanwhile fill the next batch;
 *   - a FLUSH (or FUA write) marks the open batch as needing a sync and waits for it; the
 *     batch's single fdatasync answers every flush that joined it, from every volume.
 *
 * Nothing waits on a timer: a lone writer's batch goes out on the next event-loop turn.
 * If a write or fdatasync fails, the log's state on disk is unknown, so the writer fails every
 * pending and later operation (fail-stop) until the pool is reopened and recovered.
 *
 * Invariant: batches are written strictly in seq order, and `onBatchWritten` is called for
 * each in that order, after its pwrite (and its fdatasync when one was needed) completed.
 */
import assert from 'node:assert/strict';
import { BLOCK_SIZE } from '../block-device.ts';
import { EngineError } from '../errors.ts';
import type { Storage, StorageFile } from '../storage/storage.ts';
import { Batch, metaReserveBytes } from './batch.ts';
import { HEADER_BYTES, sealHeader, segmentFileName } from './format.ts';

export const MAX_BATCH_DATA_BYTES = 8 * 1024 * 1024;
/** Room kept after a batch's data for its meta area (sized for the largest batch). */
const META_RESERVE_BYTES = metaReserveBytes(MAX_BATCH_DATA_BYTES / BLOCK_SIZE);
/** A new batch starts a new segment when less than this much data room is left. */
const MIN_BATCH_DATA_BYTES = 256 * 1024;
/** Sealed batches waiting for the disk before new writes are made to wait (back-pressure). */
const MAX_QUEUED_BATCHES = 4;

export interface LogPosition {
  segmentNo: number;
  offsetInSegment: number;
  /** seq of the next record to be written. */
  nextSeq: number;
}

export interface LogWriterOptions {
  storage: Storage;
  poolId: number;
  segmentBytes: number;
  /** Where the next record goes (the end of the recovered log). */
  start: LogPosition;
  /**
   * Returns the number of the segment the log continues in when the current one is full: the
   * pool reuses numbers of cleaned segments so that pbns stay within 32 bits.
   */
  allocateSegment: () => number;
  /** Called in log order after each batch is written (and synced if it had to be). */
  onBatchWritten: (batch: Batch) => void;
  onFailure: (err: EngineError) => void;
}

export interface LogWriterCounters {
  batches: number;
  writeRequests: number;
  fdatasyncs: number;
  flushRequests: number;
  bytesWritten: number;
}

export class LogWriter {
  readonly #opts: LogWriterOptions;
  readonly #blocksPerSegment: number;
  readonly #files = new Map<number, StorageFile>();
  readonly #freeBuffers: Buffer[] = [];
  /** Sealed, not yet written; the head is being written when #busy. */
  readonly #queue: Batch[] = [];
  #open: Batch | undefined;
  /** Where the next batch to open will go. */
  #reserveSegment: number;
  #reserveOffset: number;
  #nextSeq: number;
  /** seq of the last record written, and of the last one known durable (fdatasync'ed). */
  #writtenSeq: number;
  #syncedSeq: number;
  #busy = false;
  #kickScheduled = false;
  /** Segments written since their last fdatasync. */
  readonly #unsynced = new Set<number>();
  #failure: EngineError | undefined;
  /**
   * Batches that will never be written (the log failed before them). Layers' overlays still
   * point into them, and reads of a read-only pool must keep answering from them, so their
   * buffers are kept, not recycled.
   */
  readonly #lost: Batch[] = [];
  #roomWaiters: Array<() => void> = [];
  #closed = false;
  readonly counters: LogWriterCounters = { batches: 0, writeRequests: 0, fdatasyncs: 0, flushRequests: 0, bytesWritten: 0 };

  constructor(opts: LogWriterOptions) {
    assert.ok(opts.segmentBytes % BLOCK_SIZE === 0 && opts.segmentBytes >= HEADER_BYTES + MIN_BATCH_DATA_BYTES + META_RESERVE_BYTES);
    this.#opts = opts;
    this.#blocksPerSegment = opts.segmentBytes / BLOCK_SIZE;
    this.#reserveSegment = opts.start.segmentNo;
    this.#reserveOffset = opts.start.offsetInSegment;
    this.#nextSeq = opts.start.nextSeq;
    // Recovery syncs what it replayed before the writer starts.
    this.#writtenSeq = opts.start.nextSeq - 1;
    this.#syncedSeq = opts.start.nextSeq - 1;
  }

  get failure(): EngineError | undefined {
    return this.#failure;
  }

  /** Bytes of log reserved so far in the current segment numbering: used for capacity checks. */
  get appendPosition(): { segmentNo: number; offsetInSegment: number } {
    return { segmentNo: this.#reserveSegment, offsetInSegment: this.#reserveOffset };
  }

  /** The batch new operations go into, opened on demand. */
  openBatch(): Batch {
    this.#throwIfFailed();
    if (this.#open) return this.#open;
    let room = Math.min(MAX_BATCH_DATA_BYTES, this.#opts.segmentBytes - this.#reserveOffset - HEADER_BYTES - META_RESERVE_BYTES);
    if (room < MIN_BATCH_DATA_BYTES) {
      this.#reserveSegment = this.#opts.allocateSegment();
      this.#reserveOffset = 0;
      room = Math.min(MAX_BATCH_DATA_BYTES, this.#opts.segmentBytes - HEADER_BYTES - META_RESERVE_BYTES);
    }
    const firstPbn = this.#reserveSegment * this.#blocksPerSegment + (this.#reserveOffset + HEADER_BYTES) / BLOCK_SIZE;
    const buffer = this.#freeBuffers.pop() ?? Buffer.allocUnsafe(HEADER_BYTES + MAX_BATCH_DATA_BYTES + META_RESERVE_BYTES);
    this.#open = new Batch(buffer, this.#reserveSegment, this.#reserveOffset, firstPbn, room / BLOCK_SIZE);
    this.#kick();
    return this.#open;
  }

  /** Seals the open batch (it is full) so that the next openBatch() starts a new one. */
  sealOpenBatch(): void {
    const batch = this.#open;
    if (!batch) return;
    this.#open = undefined;
    batch.seal();
    if (batch.isEmpty && !batch.needsSync) {
      this.#freeBuffers.push(batch.buffer);
      batch.settle(undefined);
      return;
    }
    if (!batch.isEmpty) {
      batch.seq = this.#nextSeq++;
      this.#reserveSegment = batch.segmentNo;
      this.#reserveOffset = batch.offsetInSegment + batch.byteLength;
    }
    this.#queue.push(batch);
    this.#kick();
  }

  /** True when new writes should wait for the disk to catch up. */
  get isBackedUp(): boolean {
    return this.#queue.length >= MAX_QUEUED_BATCHES;
  }

  /** Resolves when there is room for more batches. */
  waitForRoom(): Promise<void> {
    if (!this.isBackedUp || this.#failure) return Promise.resolve();
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  /**
   * Resolves when everything appended before the call is durable. `requests` counts the client
   * flushes this call answers (for the flushes-per-fdatasync figure).
   */
  flush(requests = 1): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (!this.#open && this.#queue.length === 0 && this.#unsynced.size === 0 && !this.#busy) return Promise.resolve();
    const batch = this.openBatch();
    batch.needsSync = true;
    batch.flushRequests += requests;
    return batch.durable();
  }

  /**
   * Makes durable every record already written up to now, without going through the batch
   * queue, so that a checkpoint does not stall the pipeline behind a long fdatasync. Segments
   * that are only partly synced by this call are synced again by the next flush (harmless).
   */
  async syncWritten(): Promise<void> {
    if (this.#failure) throw this.#failure;
    const segments = [...this.#unsynced];
    const upTo = this.#writtenSeq;
    try {
      for (const n of segments) {
        const file = this.#files.get(n);
        assert.ok(file);
        await file.datasync();
      }
      this.#syncedSeq = Math.max(this.#syncedSeq, upTo);
    } catch (err) {
      this.#fail(err); // a failed fdatasync leaves the log's state unknown, wherever it came from
      throw this.#failure;
    }
  }

  /** Finds the unwritten batch holding pbn (for reads of data not yet on disk). */
  batchHolding(pbn: number): Batch | undefined {
    if (this.#open?.containsPbn(pbn)) return this.#open;
    for (const b of this.#queue) if (b.containsPbn(pbn)) return b;
    for (const b of this.#lost) if (b.containsPbn(pbn)) return b;
    return undefined;
  }

  /** Opens (or returns) the file of a segment for reading. */
  async segmentFile(segmentNo: number, create = false): Promise<StorageFile> {
    let file = this.#files.get(segmentNo);
    if (!file) {
      file = await this.#opts.storage.open(segmentFileName(segmentNo), { create });
      const raced = this.#files.get(segmentNo);
      if (raced) {
        await file.close();
        return raced;
      }
      this.#files.set(segmentNo, file);
    }
    return file;
  }

  /** Segments that unwritten batches will go to: the cleaner must leave them alone. */
  busySegments(): Set<number> {
    const busy = new Set<number>([this.#reserveSegment]);
    if (this.#open) busy.add(this.#open.segmentNo);
    for (const b of this.#queue) busy.add(b.segmentNo);
    return busy;
  }

  /** Closes a deleted segment's file. */
  async forgetSegment(segmentNo: number): Promise<void> {
    const file = this.#files.get(segmentNo);
    this.#files.delete(segmentNo);
    this.#unsynced.delete(segmentNo);
    await file?.close();
  }

  /** Adopts an already open segment file (recovery opened it). */
  adoptSegmentFile(segmentNo: number, file: StorageFile): void {
    this.#files.set(segmentNo, file);
  }

  #kick(): void {
    if (this.#busy || this.#kickScheduled || this.#closed) return;
    this.#kickScheduled = true;
    setImmediate(() => {
      this.#kickScheduled = false;
      void this.#run();
    });
  }

  async #run(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      for (;;) {
        if (this.#queue.length === 0) this.sealOpenBatch();
        const batch = this.#queue[0];
        if (!batch) break;
        await this.#writeBatch(batch);
        this.#queue.shift();
        this.#wakeRoomWaiters();
      }
    } finally {
      this.#busy = false;
    }
  }

  async #writeBatch(batch: Batch): Promise<void> {
    try {
      if (this.#failure) throw this.#failure;
      if (!batch.isEmpty) await this.#append(batch);
      if (batch.needsSync) await this.#syncAll();
    } catch (err) {
      this.#fail(err);
      batch.settle(this.#failure);
      this.#lost.push(batch);
      return;
    }
    this.counters.flushRequests += batch.flushRequests;
    batch.written = true;
    if (!batch.isEmpty) {
      this.counters.batches++;
      this.counters.writeRequests += batch.writeRequests;
      this.#opts.onBatchWritten(batch);
    }
    batch.settle(undefined);
    this.#freeBuffers.push(batch.buffer);
  }

  async #append(batch: Batch): Promise<void> {
    sealHeader(batch.buffer, {
      seq: batch.seq,
      poolId: this.#opts.poolId,
      entryCount: batch.entryCount,
      dataBlocks: batch.dataBlocks,
      dataCrc: batch.writeMeta(),
      metaBlocks: batch.metaBlocks,
      refCount: batch.refCount,
      syncedSeq: this.#syncedSeq,
    });
    const file = await this.#fileForAppend(batch.segmentNo);
    await file.write(batch.buffer, 0, batch.byteLength, batch.offsetInSegment);
    this.#writtenSeq = batch.seq;
    this.#unsynced.add(batch.segmentNo);
    this.counters.bytesWritten += batch.byteLength;
  }

  /** A new segment is created full-size and made durable in the directory before use. */
  async #fileForAppend(segmentNo: number): Promise<StorageFile> {
    const existing = this.#files.get(segmentNo);
    if (existing) return existing;
    const file = await this.segmentFile(segmentNo, true);
    await file.truncate(0); // a reused number must not keep anything of its past
    await file.truncate(this.#opts.segmentBytes);
    await file.datasync();
    await this.#opts.storage.syncDir();
    return file;
  }

  async #syncAll(): Promise<void> {
    const segments = [...this.#unsynced];
    const upTo = this.#writtenSeq;
    this.#unsynced.clear();
    for (const segmentNo of segments) {
      const file = this.#files.get(segmentNo);
      assert.ok(file);
      await file.datasync();
      this.counters.fdatasyncs++;
    }
    this.#syncedSeq = Math.max(this.#syncedSeq, upTo);
  }

  #fail(err: unknown): void {
    if (this.#failure) return;
    const cause = err instanceof EngineError ? err : new EngineError('IO_ERROR', String(err), { cause: err });
    this.#failure = new EngineError('IO_ERROR', `log write failed, the pool is read-only until restart: ${cause.message}`, { cause });
    // Everything queued behind the failed batch fails too: its order on disk is unknown.
    for (const b of this.#queue.slice(1)) b.settle(this.#failure);
    const open = this.#open;
    this.#open = undefined;
    open?.settle(this.#failure);
    if (open) this.#lost.push(open);
    this.#wakeRoomWaiters();
    this.#opts.onFailure(this.#failure);
  }

  #wakeRoomWaiters(): void {
    if (this.isBackedUp && !this.#failure) return;
    const waiters = this.#roomWaiters;
    this.#roomWaiters = [];
    for (const w of waiters) w();
  }

  #throwIfFailed(): void {
    if (this.#failure) throw this.#failure;
    if (this.#closed) throw new EngineError('FAILED_PRECONDITION', 'the pool is closed');
  }

  /** Writes and syncs everything pending, then closes the segment files. */
  async close(): Promise<void> {
    if (!this.#failure) await this.flush(0).catch(() => {});
    this.#closed = true;
    for (const file of this.#files.values()) await file.close().catch(() => {});
    this.#files.clear();
  }

  /** The position just after the last record handed to onBatchWritten. */
  static positionAfter(batch: Batch): LogPosition {
    return { segmentNo: batch.segmentNo, offsetInSegment: batch.offsetInSegment + batch.byteLength, nextSeq: batch.seq + 1 };
  }
}
