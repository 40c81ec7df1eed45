/**
 * A pool: one directory (or simulated disk) holding one log shared by every volume, the pool
 * metadata and the index checkpoint. The pool recovers on open, owns the log writer, keeps
 * the volume table and hands out BlockDevice handles. It implements both faces of the engine:
 * VolumeManager (management, for the API) and ExportProvider (block I/O, for NBD).
 *
 * Recovery (see docs/ARCHITECTURE.md, "Recovery"):
 *   1. read pool.json (volumes), 2. load the index checkpoint if any, 3. replay the log from
 *   the checkpoint's position until the first invalid record, 4. cut the log there (zero the
 *   rest of that segment, delete later segments) so no stale record can ever be replayed,
 *   5. resume appending at that point.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import fs from 'node:fs';
import { BLOCK_SIZE, type BlockDevice, type ExportProvider } from './block-device.ts';
import { encodeCheckpoint, readCheckpoint, writeCheckpoint } from './checkpoint.ts';
import { EngineError, isEngineError } from './errors.ts';
import { BlockMap, UNMAPPED, ZERO_MARK } from './index/block-map.ts';
import type { Logger } from './logger.ts';
import type { Batch } from './log/batch.ts';
import { DEFAULT_SEGMENT_BYTES, OP_TRIM, OP_WRITE, parseSegmentFileName, readEntry, segmentFileName } from './log/format.ts';
import { scanLog, type ScannedRecord } from './log/log-scanner.ts';
import { LogWriter, type LogPosition } from './log/log-writer.ts';
import { validateName } from './names.ts';
import { POOL_FORMAT_VERSION, readPoolMeta, writePoolMeta, type PoolMeta } from './pool-meta.ts';
import { PoolLock } from './pool-lock.ts';
import { NodeStorage } from './storage/node-storage.ts';
import type { Storage, StorageFile } from './storage/storage.ts';
import { VolumeHandle } from './volume-handle.ts';
import { VolumeIo } from './volume-io.ts';
import type { PoolStats, VolumeInfo, VolumeManager } from './volume-manager.ts';
import { VolumeState } from './volume-state.ts';

/** Largest volume: LBAs must stay below 2^40 blocks and byte offsets exact in a double. */
export const MAX_VOLUME_SIZE_BYTES = 2 ** 50;
const DEFAULT_CHECKPOINT_INTERVAL_BYTES = 256 * 1024 * 1024;

export interface PoolOptions {
  dir: string;
  logger: Logger;
  /** Upper bound on the log's size on disk; writes beyond it fail with NO_SPACE. */
  capacityBytes?: number;
  /** Segment size for a new pool (tests use small ones); an existing pool keeps its own. */
  segmentBytes?: number;
  checkpointIntervalBytes?: number;
}

export type StoragePoolOptions = Omit<PoolOptions, 'dir'> & { name?: string };

export class Pool implements VolumeManager, ExportProvider {
  readonly #storage: Storage;
  readonly #logger: Logger;
  readonly #meta: PoolMeta;
  readonly #byName = new Map<string, VolumeState>();
  readonly #byId = new Map<number, VolumeState>();
  readonly #capacityBytes: number;
  readonly #checkpointIntervalBytes: number;
  #writer!: LogWriter;
  #io!: VolumeIo;
  #lock: PoolLock | undefined;
  #firstSegment = 1;
  #logEnd: LogPosition = { segmentNo: 1, offsetInSegment: 0, nextSeq: 1 };
  #bytesSinceCheckpoint = 0;
  #checkpointing: Promise<void> | undefined;
  #metaChain: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(storage: Storage, meta: PoolMeta, opts: StoragePoolOptions) {
    this.#storage = storage;
    this.#meta = meta;
    this.#logger = opts.logger;
    this.#capacityBytes = opts.capacityBytes ?? Number.MAX_SAFE_INTEGER;
    this.#checkpointIntervalBytes = opts.checkpointIntervalBytes ?? DEFAULT_CHECKPOINT_INTERVAL_BYTES;
  }

  /** Opens (creating if needed) the pool in a directory, taking its lock. */
  static async open(opts: PoolOptions): Promise<Pool> {
    fs.mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    const lock = PoolLock.acquire(opts.dir);
    try {
      const pool = await Pool.openWithStorage(new NodeStorage(opts.dir), opts);
      pool.#lock = lock;
      return pool;
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  /** Opens a pool on any storage (tests use a simulated disk). */
  static async openWithStorage(storage: Storage, opts: StoragePoolOptions): Promise<Pool> {
    let meta = await readPoolMeta(storage);
    if (!meta) {
      const segmentBytes = opts.segmentBytes ?? DEFAULT_SEGMENT_BYTES;
      meta = { formatVersion: POOL_FORMAT_VERSION, poolId: randomInt(1, 2 ** 32 - 1), segmentBytes, nextVolumeId: 1, volumes: [] };
      await writePoolMeta(storage, meta);
    }
    const pool = new Pool(storage, meta, opts);
    await pool.#recover();
    return pool;
  }

  get #blocksPerSegment(): number {
    return this.#meta.segmentBytes / BLOCK_SIZE;
  }

  async #recover(): Promise<void> {
    const started = performance.now();
    const checkpoint = await readCheckpoint(this.#storage, this.#meta.poolId).catch((err: unknown) => {
      if (isEngineError(err) && err.code === 'CORRUPTION') {
        this.#logger.warn({ err: err.message }, 'ignoring a damaged index checkpoint: replaying the whole log');
        return undefined;
      }
      throw err;
    });
    const segments = (await this.#storage.list()).map(parseSegmentFileName).filter((n) => n !== undefined);
    this.#firstSegment = segments.length > 0 ? Math.min(...segments) : 1;
    for (const v of this.#meta.volumes) {
      const state = new VolumeState(v.id, v.name, v.sizeBytes, v.createdAtMs, checkpoint?.maps.get(v.id));
      this.#byName.set(v.name, state);
      this.#byId.set(v.id, state);
    }
    const files = new Map<number, StorageFile>();
    const start = checkpoint?.position ?? { segmentNo: this.#firstSegment, offsetInSegment: 0, nextSeq: 1 };
    const scan = await scanLog({
      poolId: this.#meta.poolId,
      segmentBytes: this.#meta.segmentBytes,
      start,
      openSegment: (n) => this.#openExisting(n, files, segments),
      apply: (record) => this.#replay(record),
    });
    await this.#cutLog(scan.end, files, segments);
    this.#logEnd = scan.end;
    this.#writer = new LogWriter({
      storage: this.#storage,
      poolId: this.#meta.poolId,
      segmentBytes: this.#meta.segmentBytes,
      start: scan.end,
      onBatchWritten: (batch) => this.#onBatchWritten(batch),
      onFailure: (err) => this.#logger.error({ err: err.message }, 'the pool turned read-only'),
    });
    for (const [n, f] of files) this.#writer.adoptSegmentFile(n, f);
    this.#io = new VolumeIo({ writer: this.#writer, blocksPerSegment: this.#blocksPerSegment, reserveSpace: (b) => this.#reserveSpace(b) });
    this.#logger.info(
      { checkpoint: Boolean(checkpoint), replayedRecords: scan.records, replayedBytes: scan.bytes, stop: scan.stopReason, volumes: this.#byName.size, ms: Math.round(performance.now() - started) },
      'pool recovered',
    );
  }

  async #openExisting(n: number, files: Map<number, StorageFile>, segments: number[]): Promise<StorageFile | undefined> {
    const open = files.get(n);
    if (open) return open;
    if (!segments.includes(n)) return undefined;
    const file = await this.#storage.open(segmentFileName(n), { create: false });
    files.set(n, file);
    return file;
  }

  #replay(record: ScannedRecord): void {
    let pbn = record.firstPbn;
    for (const e of record.entries) {
      const vol = this.#byId.get(e.volumeId);
      if (e.op === OP_WRITE) {
        vol?.index.setRun(e.lba, e.count, pbn);
        pbn += e.count;
      } else {
        vol?.index.fill(e.lba, e.count, e.op === OP_TRIM ? UNMAPPED : ZERO_MARK);
      }
    }
  }

  /** Makes the recovered end the real end: nothing after it can be replayed later. */
  async #cutLog(end: LogPosition, files: Map<number, StorageFile>, segments: number[]): Promise<void> {
    const tail = await this.#openExisting(end.segmentNo, files, segments);
    if (tail) {
      await tail.truncate(end.offsetInSegment);
      await tail.truncate(this.#meta.segmentBytes);
      await tail.datasync();
    }
    for (const n of segments) {
      if (n <= end.segmentNo) continue;
      await files.get(n)?.close();
      files.delete(n);
      await this.#storage.remove(segmentFileName(n));
    }
    await this.#storage.syncDir();
  }

  #onBatchWritten(batch: Batch): void {
    let pbn = batch.firstPbn;
    for (let i = 0; i < batch.entryCount; i++) {
      const e = readEntry(batch.buffer, i);
      const vol = this.#byId.get(e.volumeId);
      if (e.op === OP_WRITE) {
        vol?.applyWrittenWrite(e.lba, e.count, pbn);
        pbn += e.count;
      } else {
        vol?.applyWrittenRange(e.lba, e.count, e.op === OP_TRIM ? UNMAPPED : ZERO_MARK);
      }
    }
    for (const vol of this.#byId.values()) vol.forgetBatch(batch);
    this.#logEnd = LogWriter.positionAfter(batch);
    this.#bytesSinceCheckpoint += batch.byteLength;
    if (this.#bytesSinceCheckpoint >= this.#checkpointIntervalBytes && !this.#checkpointing) this.#startCheckpoint();
  }

  /** Takes a consistent cut of the index now and writes it in the background. */
  #startCheckpoint(): void {
    this.#bytesSinceCheckpoint = 0;
    const parts = encodeCheckpoint(this.#meta.poolId, this.#logEnd, this.#liveMaps());
    this.#checkpointing = this.#writer
      .syncWritten()
      .then(() => writeCheckpoint(this.#storage, parts))
      .catch((err: unknown) => this.#logger.warn({ err: String(err) }, 'index checkpoint failed; the next one will retry'))
      .finally(() => {
        this.#checkpointing = undefined;
      });
  }

  #liveMaps(): Map<number, BlockMap> {
    const maps = new Map<number, BlockMap>();
    for (const [id, vol] of this.#byId) maps.set(id, vol.index);
    return maps;
  }

  #usedBytes(): number {
    const pos = this.#writer.appendPosition;
    return (pos.segmentNo - this.#firstSegment) * this.#meta.segmentBytes + pos.offsetInSegment;
  }

  #reserveSpace(bytes: number): void {
    if (this.#usedBytes() + bytes > this.#capacityBytes) {
      throw new EngineError('NO_SPACE', `pool is full (capacity ${this.#capacityBytes} bytes)`);
    }
  }

  // --- VolumeManager -------------------------------------------------------------------------

  async createVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    this.#checkOpen();
    validateName(name);
    const size = validateSize(sizeBytes);
    if (this.#byName.has(name)) throw new EngineError('ALREADY_EXISTS', `volume "${name}" already exists`);
    const vol = new VolumeState(this.#meta.nextVolumeId++, name, size, Date.now());
    this.#byName.set(name, vol);
    this.#byId.set(vol.id, vol);
    try {
      await this.#saveMeta();
    } catch (err) {
      this.#byName.delete(name);
      this.#byId.delete(vol.id);
      throw err;
    }
    this.#logger.info({ volume: name, sizeBytes: size }, 'volume created');
    return this.#info(vol);
  }

  async deleteVolume(name: string): Promise<void> {
    this.#checkOpen();
    const vol = this.#get(name);
    if (vol.openHandles > 0) {
      throw new EngineError('BUSY', `volume "${name}" is in use by ${vol.openHandles} connection(s); disconnect them first`);
    }
    vol.deleted = true;
    this.#byName.delete(name);
    try {
      await this.#saveMeta();
    } catch (err) {
      vol.deleted = false;
      this.#byName.set(name, vol);
      throw err;
    }
    this.#byId.delete(vol.id);
    this.#logger.info({ volume: name }, 'volume deleted');
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    this.#checkOpen();
    const vol = this.#get(name);
    const size = validateSize(sizeBytes);
    if (size < vol.sizeBytes) {
      throw new EngineError('INVALID_ARGUMENT', `volume "${name}" is ${vol.sizeBytes} bytes; shrinking to ${size} is not supported`);
    }
    if (size === vol.sizeBytes) return this.#info(vol);
    const before = vol.sizeBytes;
    vol.sizeBytes = size;
    try {
      await this.#saveMeta();
    } catch (err) {
      vol.sizeBytes = before;
      throw err;
    }
    this.#logger.info({ volume: name, sizeBytes: size }, 'volume resized');
    return this.#info(vol);
  }

  getVolume(name: string): VolumeInfo {
    return this.#info(this.#get(name));
  }

  listVolumes(): VolumeInfo[] {
    return [...this.#byName.values()].map((v) => this.#info(v)).sort((a, b) => a.name.localeCompare(b.name));
  }

  stats(): PoolStats {
    const c = this.#writer.counters;
    let logicalBytes = 0;
    for (const v of this.#byName.values()) logicalBytes += v.index.mappedCount * BLOCK_SIZE;
    const physicalBytes = this.#usedBytes();
    return {
      logicalBytes,
      physicalBytes,
      savedByClonesBytes: 0,
      savedByDedupBytes: 0,
      deadBytes: Math.max(0, physicalBytes - logicalBytes),
      capacityBytes: this.#capacityBytes === Number.MAX_SAFE_INTEGER ? 0 : this.#capacityBytes,
      writesPerBatch: c.batches === 0 ? 0 : c.writeRequests / c.batches,
      flushesPerFdatasync: c.fdatasyncs === 0 ? 0 : c.flushRequests / c.fdatasyncs,
      batches: c.batches,
      fdatasyncs: c.fdatasyncs,
      volumes: this.#byName.size,
      readOnly: this.#writer.failure !== undefined,
    };
  }

  // --- ExportProvider ------------------------------------------------------------------------

  openExport(name: string): BlockDevice {
    this.#checkOpen();
    return new VolumeHandle(this.#get(name), this.#io);
  }

  listExports(): string[] {
    return [...this.#byName.keys()].sort();
  }

  // --- lifecycle -----------------------------------------------------------------------------

  /** Writes and syncs everything, saves a checkpoint so the next open replays nothing. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#checkpointing;
    if (!this.#writer.failure) {
      await this.#writer.flush(0).catch(() => {});
      if (!this.#writer.failure) {
        const parts = encodeCheckpoint(this.#meta.poolId, this.#logEnd, this.#liveMaps());
        await writeCheckpoint(this.#storage, parts).catch((err: unknown) => this.#logger.warn({ err: String(err) }, 'final checkpoint failed'));
      }
    }
    await this.#writer.close();
    await this.#metaChain;
    this.#lock?.release();
    this.#logger.info('pool closed');
  }

  #checkOpen(): void {
    if (this.#closed) throw new EngineError('FAILED_PRECONDITION', 'the pool is closed');
  }

  #get(name: string): VolumeState {
    const vol = this.#byName.get(name);
    if (!vol) throw new EngineError('NOT_FOUND', `volume "${name}" not found`);
    return vol;
  }

  #info(v: VolumeState): VolumeInfo {
    return { name: v.name, sizeBytes: v.sizeBytes, allocatedBytes: v.index.mappedCount * BLOCK_SIZE, createdAtMs: v.createdAtMs, openHandles: v.openHandles };
  }

  /** Metadata writes are serialized: each one writes the table as it is when its turn comes. */
  #saveMeta(): Promise<void> {
    const run = async () => {
      this.#meta.volumes = [...this.#byName.values()].map((v) => ({ id: v.id, name: v.name, sizeBytes: v.sizeBytes, createdAtMs: v.createdAtMs }));
      await writePoolMeta(this.#storage, this.#meta);
    };
    const next = this.#metaChain.then(run, run);
    this.#metaChain = next.catch(() => {});
    return next;
  }
}

function validateSize(sizeBytes: number): number {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    throw new EngineError('INVALID_ARGUMENT', `invalid size ${sizeBytes}: must be a positive number of bytes`);
  }
  if (sizeBytes > MAX_VOLUME_SIZE_BYTES) {
    throw new EngineError('OUT_OF_RANGE', `size ${sizeBytes} exceeds the maximum volume size of ${MAX_VOLUME_SIZE_BYTES} bytes`);
  }
  const rounded = Math.ceil(sizeBytes / BLOCK_SIZE) * BLOCK_SIZE;
  assert.ok(rounded >= sizeBytes);
  return rounded;
}
