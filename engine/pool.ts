/**
 * A pool: one directory (or simulated disk) holding one log shared by every volume, the pool
 * metadata and the index checkpoint. The pool recovers on open, owns the log writer, keeps
 * the volume table and hands out BlockDevice handles. It implements both faces of the engine:
 * VolumeManager (management, for the API) and ExportProvider (block I/O, for NBD).
 *
 * Recovery (see docs/ARCHITECTURE.md, "Recovery"):
 *   1. read pool.json (layers, volumes, snapshots), 2. load the index checkpoint if any, 3. replay the log from
 *   the checkpoint's position until the first invalid record, 4. cut the log there (zero the
 *   rest of that segment, delete later segments) so no stale record can ever be replayed,
 *   5. resume appending at that point.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import fs from 'node:fs';
import { BLOCK_SIZE, type BlockDevice, type ExportProvider } from './block-device.ts';
import { encodeCheckpoint, readCheckpoint, writeCheckpoint } from './checkpoint.ts';
import { EngineError } from './errors.ts';
import { BlockMap, LBA_LIMIT, ZERO_MARK } from './index/block-map.ts';
import { Catalog } from './catalog.ts';
import type { Layer } from './layer.ts';
import type { Logger } from './logger.ts';
import type { Batch } from './log/batch.ts';
import { BlockCache } from './block-cache.ts';
import { DedupIndex } from './dedup-index.ts';
import { DedupSavings } from './dedup-savings.ts';
import { BlockChecksums } from './log/block-checksums.ts';
import { DEFAULT_SEGMENT_BYTES, OP_REF, OP_TRIM, OP_WRITE, parseSegmentFileName, readEntry, segmentFileName } from './log/format.ts';
import { readSegmentChecksums, scanLog, type ScannedRecord } from './log/log-scanner.ts';
import { LogWriter, type LogPosition } from './log/log-writer.ts';
import { validateName } from './names.ts';
import { POOL_FORMAT_VERSION, readPoolMeta, writePoolMeta, type PoolMeta } from './pool-meta.ts';
import { PoolLock } from './pool-lock.ts';
import { NodeStorage } from './storage/node-storage.ts';
import type { Storage, StorageFile } from './storage/storage.ts';
import { Cleaner } from './cleaner.ts';
import { SegmentUsage } from './segment-usage.ts';
import { VolumeHandle } from './volume-handle.ts';
import { VolumeIo } from './volume-io.ts';
import type { CreateVolumeOptions, PoolStats, SnapshotInfo, VolumeInfo, VolumeManager } from './volume-manager.ts';
import { VolumeState } from './volume-state.ts';
import { countVisibleBlocks } from './visible-blocks.ts';

/** Largest volume: LBAs must stay below 2^40 blocks and byte offsets exact in a double. */
export const MAX_VOLUME_SIZE_BYTES = 2 ** 50;
const DEFAULT_CHECKPOINT_INTERVAL_BYTES = 256 * 1024 * 1024;
/** Chains longer than this are flattened in the background so that reads stay short. */
export const MAX_CHAIN_DEPTH = 8;

export interface PoolOptions {
  dir: string;
  logger: Logger;
  /** Upper bound on the log's size on disk; writes beyond it fail with NO_SPACE. */
  capacityBytes?: number;
  /** Segment size for a new pool (tests use small ones); an existing pool keeps its own. */
  segmentBytes?: number;
  checkpointIntervalBytes?: number;
  /** Size of the shared block cache (verified blocks by physical location); 0 disables it. */
  cacheBytes?: number;
}

/** Block cache of an embedded pool when the caller does not choose (the daemon sizes it from RAM). */
export const DEFAULT_POOL_CACHE_BYTES = 64 * 1024 * 1024;
/** Per-segment CRC tables kept in memory (64 KiB each with 64 MiB segments). */
const CHECKSUM_TABLES = 512;

export type StoragePoolOptions = Omit<PoolOptions, 'dir'> & { name?: string };

export class Pool implements VolumeManager, ExportProvider {
  readonly #storage: Storage;
  readonly #logger: Logger;
  readonly #meta: PoolMeta;
  #catalog!: Catalog;
  readonly #capacityBytes: number;
  readonly #checkpointIntervalBytes: number;
  #writer!: LogWriter;
  #io!: VolumeIo;
  #lock: PoolLock | undefined;
  /** Segment files that exist or are reserved by the writer. */
  readonly #segments = new Set<number>();
  #usage!: SegmentUsage;
  #checksums!: BlockChecksums;
  readonly #cache: BlockCache;
  #dedup!: DedupIndex;
  readonly #dedupSavings = new DedupSavings();
  /** Seq of the last record written to each segment since open: the cleaner's notion of age. */
  readonly #segmentSeq = new Map<number, number>();
  #cleaner!: Cleaner;
  #cleaning: Promise<void> | undefined;
  #cleanTimer: NodeJS.Timeout | undefined;
  #logEnd: LogPosition = { segmentNo: 1, offsetInSegment: 0, nextSeq: 1 };
  #bytesSinceCheckpoint = 0;
  #checkpointing: Promise<void> | undefined;
  #metaChain: Promise<void> = Promise.resolve();
  #maintenance: Promise<void> = Promise.resolve();
  #closed = false;

  private constructor(storage: Storage, meta: PoolMeta, opts: StoragePoolOptions) {
    this.#storage = storage;
    this.#meta = meta;
    this.#logger = opts.logger;
    this.#capacityBytes = opts.capacityBytes ?? Number.MAX_SAFE_INTEGER;
    this.#checkpointIntervalBytes = opts.checkpointIntervalBytes ?? DEFAULT_CHECKPOINT_INTERVAL_BYTES;
    this.#cache = new BlockCache(opts.cacheBytes ?? DEFAULT_POOL_CACHE_BYTES);
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
      meta = { formatVersion: POOL_FORMAT_VERSION, poolId: randomInt(1, 2 ** 32 - 1), segmentBytes, nextLayerId: 1, layers: [], volumes: [], snapshots: [] };
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
    // A damaged checkpoint is fatal: cleaned segments are gone, so the whole log cannot be
    // replayed instead. (It is replaced atomically, so only the disk can damage it.)
    const checkpoint = await readCheckpoint(this.#storage, this.#meta.poolId);
    const segments = (await this.#storage.list()).map(parseSegmentFileName).filter((n) => n !== undefined);
    for (const n of segments) this.#segments.add(n);
    this.#catalog = Catalog.fromMeta(this.#meta, checkpoint?.maps);
    const files = new Map<number, StorageFile>();
    // Without a checkpoint nothing was ever cleaned, so the log starts at its beginning.
    const start = checkpoint?.position ?? { segmentNo: 1, offsetInSegment: 0, nextSeq: 1 };
    const scan = await scanLog({
      poolId: this.#meta.poolId,
      segmentBytes: this.#meta.segmentBytes,
      start,
      segments,
      openSegment: (n) => this.#openExisting(n, files, segments),
      apply: (record) => this.#replay(record),
    });
    this.#usage = new SegmentUsage(this.#blocksPerSegment);
    this.#catalog.attachUsage(this.#usage);
    await this.#cutLog(scan.end, scan.visited, files);
    this.#segments.add(scan.end.segmentNo);
    this.#logEnd = scan.end;
    this.#writer = new LogWriter({
      storage: this.#storage,
      poolId: this.#meta.poolId,
      segmentBytes: this.#meta.segmentBytes,
      start: scan.end,
      allocateSegment: () => this.#allocateSegment(),
      onBatchWritten: (batch) => this.#onBatchWritten(batch),
      // Fail-stop must be loud: this is the one line that says why every later write fails.
      onFailure: (err) =>
        this.#logger.error(
          { err: err.message, readOnly: true },
          'the pool turned read-only: a log write or fdatasync failed; every write and flush fails until the engine restarts',
        ),
    });
    for (const [n, f] of files) this.#writer.adoptSegmentFile(n, f);
    const writer = this.#writer;
    const logOpts = { poolId: this.#meta.poolId, segmentBytes: this.#meta.segmentBytes };
    this.#checksums = new BlockChecksums({
      blocksPerSegment: this.#blocksPerSegment,
      maxSegments: CHECKSUM_TABLES,
      load: async (n, sink) => readSegmentChecksums(await writer.segmentFile(n), n, logOpts, sink),
    });
    this.#dedup = new DedupIndex(this.#blocksPerSegment);
    this.#io = new VolumeIo({
      writer: this.#writer,
      blocksPerSegment: this.#blocksPerSegment,
      reserveSpace: (b) => this.#reserveSpace(b),
      checksums: this.#checksums,
      cache: this.#cache,
      dedup: this.#dedup,
    });
    this.#cleaner = new Cleaner({
      writer: this.#writer,
      catalog: this.#catalog,
      usage: this.#usage,
      checksums: this.#checksums,
      dedup: this.#dedup,
      poolId: this.#meta.poolId,
      segmentBytes: this.#meta.segmentBytes,
      logger: this.#logger,
      segments: () => this.#segments,
      lastSeqOf: (n) => this.#segmentSeq.get(n),
      nextSeq: () => this.#logEnd.nextSeq,
      checkpoint: () => this.#checkpointNow(),
      deleteSegment: (n) => this.#deleteSegment(n),
    });
    for (const d of scan.damaged) {
      this.#logger.error({ seq: d.seq, segment: d.segmentNo, offset: d.offsetInSegment }, 'a durable log record has damaged data blocks: replayed; reads of those blocks fail with CORRUPTION');
    }
    this.#logger.info(
      { checkpoint: Boolean(checkpoint), replayedRecords: scan.records, replayedBytes: scan.bytes, stop: scan.stopReason, exports: this.#catalog.exports.size, ms: Math.round(performance.now() - started) },
      'pool recovered',
    );
    // Cleaning needs no timer to be correct; this one only notices idle dead space.
    this.#cleanTimer = setInterval(() => this.#kickCleaner(), 2000);
    this.#cleanTimer.unref();
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
    let ref = 0;
    for (const e of record.entries) {
      const layer = this.#catalog.layers.get(e.volumeId);
      if (e.op === OP_WRITE) {
        layer?.index.setRun(e.lba, e.count, pbn);
        pbn += e.count;
      } else if (e.op === OP_REF) {
        layer?.applyWrittenRef(e.lba, e.count, record.refTargets, ref);
        ref += e.count;
      } else if (layer) {
        layer.index.fill(e.lba, e.count, e.op === OP_TRIM ? layer.unmapValue : ZERO_MARK);
      }
    }
  }

  /**
   * Makes the recovered end the real end: the rest of the end segment is zeroed, and every
   * segment the scan did not read that no index entry points into is deleted — it can only
   * hold records after the end (or nothing), which must never be replayed later.
   */
  async #cutLog(end: LogPosition, visited: Set<number>, files: Map<number, StorageFile>): Promise<void> {
    // The replayed records may exist only in the page cache (the engine was killed before a
    // flush): what recovery builds on — flushes, checkpoints, clones — must stand on disk.
    for (const n of visited) await files.get(n)?.datasync();
    const tail = await this.#openExisting(end.segmentNo, files, [...this.#segments]);
    if (tail) {
      await tail.truncate(end.offsetInSegment);
      await tail.truncate(this.#meta.segmentBytes);
      await tail.datasync();
    }
    for (const n of [...this.#segments]) {
      if (n === end.segmentNo || visited.has(n) || this.#usage.live(n) > 0) continue;
      await files.get(n)?.close();
      files.delete(n);
      await this.#storage.remove(segmentFileName(n));
      this.#segments.delete(n);
    }
    await this.#storage.syncDir();
  }

  #allocateSegment(): number {
    let n = 1;
    while (this.#segments.has(n)) n++;
    this.#segments.add(n);
    return n;
  }

  async #deleteSegment(n: number): Promise<void> {
    await this.#writer.forgetSegment(n);
    await this.#storage.remove(segmentFileName(n));
    await this.#storage.syncDir();
    this.#segments.delete(n);
    this.#checksums.forget(n);
    this.#segmentSeq.delete(n);
    this.#cache.dropRange(n * this.#blocksPerSegment, this.#blocksPerSegment);
    this.#dedup.reopenSegment(n);
  }

  #onBatchWritten(batch: Batch): void {
    this.#checksums.recordBatch(batch);
    this.#segmentSeq.set(batch.segmentNo, batch.seq);
    let pbn = batch.firstPbn;
    let ref = 0;
    const touched = new Set<Layer>();
    for (let i = 0; i < batch.entryCount; i++) {
      const e = readEntry(batch.buffer, i);
      const layer = this.#catalog.layers.get(e.volumeId);
      if (layer) touched.add(layer);
      if (e.op === OP_WRITE) {
        layer?.applyWrittenWrite(e.lba, e.count, pbn);
        pbn += e.count;
      } else if (e.op === OP_REF) {
        layer?.applyWrittenRef(e.lba, e.count, batch.refTargets, ref);
        ref += e.count;
      } else {
        layer?.applyWrittenRange(e.lba, e.count, e.op === OP_TRIM ? layer.unmapValue : ZERO_MARK);
      }
    }
    for (const layer of touched) layer.forgetBatch(batch);
    this.#logEnd = LogWriter.positionAfter(batch);
    this.#bytesSinceCheckpoint += batch.byteLength;
    if (this.#bytesSinceCheckpoint >= this.#checkpointIntervalBytes && !this.#checkpointing) this.#startCheckpoint();
  }

  /** Takes a consistent cut of the index now and writes it in the background. */
  #startCheckpoint(): Promise<void> {
    this.#bytesSinceCheckpoint = 0;
    const parts = encodeCheckpoint(this.#meta.poolId, this.#logEnd, this.#liveMaps());
    const done = this.#writer
      .syncWritten()
      .then(() => writeCheckpoint(this.#storage, parts))
      .finally(() => {
        if (this.#checkpointing === guarded) this.#checkpointing = undefined;
      });
    const guarded = done.catch((err: unknown) => this.#logger.warn({ err: String(err) }, 'index checkpoint failed; the next one will retry'));
    this.#checkpointing = guarded;
    return done;
  }

  #liveMaps(): Map<number, BlockMap> {
    const maps = new Map<number, BlockMap>();
    for (const [id, layer] of this.#catalog.layers) maps.set(id, layer.index);
    return maps;
  }

  /** Bytes of log on disk: every segment full but the one being appended to. */
  #usedBytes(): number {
    const pos = this.#writer.appendPosition;
    return Math.max(0, this.#segments.size - 1) * this.#meta.segmentBytes + pos.offsetInSegment;
  }

  /**
   * Client writes stop short of the capacity by a reserve that lets the cleaner copy live
   * blocks out of a segment even in a full pool; the cleaner itself does not call this.
   */
  #reserveSpace(bytes: number): void {
    if (this.#capacityBytes === Number.MAX_SAFE_INTEGER) return;
    const reserve = Math.min(2 * this.#meta.segmentBytes, Math.floor(this.#capacityBytes / 8));
    if (this.#usedBytes() + bytes > this.#capacityBytes - reserve) {
      this.#kickCleaner();
      throw new EngineError('NO_SPACE', `pool is full (capacity ${this.#capacityBytes} bytes); delete data to make room`);
    }
  }

  // --- cleaning --------------------------------------------------------------------------------

  /** A durable checkpoint of the index as it is now (waits for one in progress first). */
  async #checkpointNow(): Promise<void> {
    await this.#checkpointing;
    await this.#startCheckpoint();
  }

  /**
   * Cleans up to `maxSegments` segments (the emptiest first); resolves with how many were
   * freed. Runs in the background on its own too; calls never overlap.
   */
  clean(maxSegments = Number.MAX_SAFE_INTEGER): Promise<number> {
    const run = async (): Promise<number> => {
      let freed = 0;
      const candidates = this.#cleaner.candidates();
      while (freed < maxSegments && !this.#closed && !this.#writer.failure) {
        const victim = this.#cleaner.pickVictim(candidates);
        if (victim === undefined) break;
        candidates.delete(victim);
        if (await this.#cleaner.clean(victim)) freed++;
      }
      return freed;
    };
    const result = (this.#cleaning ?? Promise.resolve()).then(run, run);
    const settled = result.then(() => {}, (err: unknown) => {
      this.#logger.warn({ err: String(err) }, 'cleaning stopped');
    });
    this.#cleaning = settled;
    void settled.finally(() => {
      if (this.#cleaning === settled) this.#cleaning = undefined;
    });
    return result;
  }

  /** Starts background cleaning when dead space is worth reclaiming. */
  #kickCleaner(): void {
    if (this.#cleaning || this.#closed) return;
    const dead = this.#usedBytes() - this.#usage.totalLive() * BLOCK_SIZE;
    if (dead < 2 * this.#meta.segmentBytes && this.#capacityBytes === Number.MAX_SAFE_INTEGER) return;
    void this.clean(8).catch(() => {});
  }

  // --- VolumeManager: volumes ----------------------------------------------------------------

  async createVolume(name: string, sizeBytes: number, opts: CreateVolumeOptions = {}): Promise<VolumeInfo> {
    this.#checkOpen();
    validateName(name);
    const domain = opts.dedupDomain ?? '';
    if (domain !== '') validateName(domain, 'dedup domain');
    const size = validateSize(sizeBytes);
    this.#catalog.checkNameFree(name);
    const dedup = opts.dedup === true || domain !== '';
    const vol = new VolumeState({ kind: 'volume', name, sizeBytes: size, createdAtMs: Date.now(), top: this.#catalog.newLayer(undefined), dedup, dedupDomain: domain });
    await this.#publish([vol], () => {});
    this.#logger.info({ volume: name, sizeBytes: size }, 'volume created');
    return this.#volumeInfo(vol);
  }

  /**
   * Clones a snapshot (the clone's new layer sits on the snapshot's) or a volume (the volume's
   * top is frozen and both the volume and the clone get a new layer on it). Metadata only.
   */
  async cloneVolume(source: string, name: string, sizeBytes?: number): Promise<VolumeInfo> {
    this.#checkOpen();
    validateName(name);
    const src = this.#catalog.getExport(source);
    const size = validateSize(sizeBytes ?? src.sizeBytes);
    if (size < src.sizeBytes) {
      throw new EngineError('INVALID_ARGUMENT', `a clone of "${source}" needs at least ${src.sizeBytes} bytes; ${size} requested`);
    }
    this.#catalog.checkNameFree(name);
    const base = src.kind === 'snapshot' ? { frozenAs: src.top, commit: () => {} } : this.#freezeTop(src);
    const clone = new VolumeState({ kind: 'volume', name, sizeBytes: size, createdAtMs: Date.now(), top: this.#catalog.newLayer(base.frozenAs), dedup: src.dedup, dedupDomain: src.dedupDomain });
    await this.#publish([clone], base.commit);
    await this.#writer.flush(0); // what the clone shares is durable when the call returns
    this.#logger.info({ volume: name, source, sizeBytes: size }, 'volume cloned');
    this.#maybeFlatten(clone.top);
    return this.#volumeInfo(clone);
  }

  async createSnapshot(volume: string, name: string): Promise<SnapshotInfo> {
    this.#checkOpen();
    validateName(name, 'snapshot');
    const vol = this.#catalog.getVolume(volume);
    this.#catalog.checkNameFree(name);
    const base = this.#freezeTop(vol);
    const snap = new VolumeState({ kind: 'snapshot', name, sizeBytes: vol.sizeBytes, createdAtMs: Date.now(), top: base.frozenAs, sourceVolume: volume, dedup: vol.dedup, dedupDomain: vol.dedupDomain });
    await this.#publish([snap], base.commit);
    await this.#writer.flush(0); // a snapshot is durable when the call returns
    this.#logger.info({ snapshot: name, volume }, 'snapshot created');
    this.#maybeFlatten(vol.top);
    return this.#snapshotInfo(snap);
  }

  /**
   * Prepares freezing a volume's top layer: the volume will continue on a new layer above it.
   * `commit` switches the volume over; it runs only once the metadata naming the new layer is
   * durable, so no acknowledged write ever goes to a layer recovery would not know.
   */
  #freezeTop(vol: VolumeState): { frozenAs: Layer; commit: () => void } {
    if (vol.nextTop) throw new EngineError('FAILED_PRECONDITION', `volume "${vol.name}" is being snapshotted or cloned; retry`);
    const old = vol.top;
    vol.nextTop = this.#catalog.newLayer(old);
    return {
      frozenAs: old,
      commit: () => {
        old.frozen = true;
        vol.top = vol.nextTop ?? vol.top;
        vol.nextTop = undefined;
      },
    };
  }

  /**
   * Adds exports, writes pool.json naming them (and any layers created for them), then runs
   * `commit`. On failure the catalog is restored.
   */
  async #publish(added: VolumeState[], commit: () => void): Promise<void> {
    for (const e of added) this.#catalog.exports.set(e.name, e);
    try {
      await this.#saveMeta(commit);
    } catch (err) {
      for (const e of added) this.#catalog.exports.delete(e.name);
      for (const e of this.#catalog.exports.values()) e.nextTop = undefined;
      throw err;
    }
  }

  async deleteVolume(name: string): Promise<void> {
    await this.#deleteExport(this.#catalog.getVolume(name));
  }

  async deleteSnapshot(name: string): Promise<void> {
    await this.#deleteExport(this.#catalog.getSnapshot(name));
  }

  /** Removes the name at once; layers still used by clones or snapshots stay. */
  async #deleteExport(e: VolumeState): Promise<void> {
    this.#checkOpen();
    if (e.openHandles > 0) {
      throw new EngineError('BUSY', `${e.kind} "${e.name}" is in use by ${e.openHandles} connection(s); disconnect them first`);
    }
    e.deleted = true;
    this.#catalog.exports.delete(e.name);
    try {
      await this.#saveMeta(() => {});
    } catch (err) {
      e.deleted = false;
      this.#catalog.exports.set(e.name, e);
      throw err;
    }
    this.#logger.info({ [e.kind]: e.name }, `${e.kind} deleted`);
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    this.#checkOpen();
    const vol = this.#catalog.getVolume(name);
    const size = validateSize(sizeBytes);
    if (size < vol.sizeBytes) {
      throw new EngineError('FAILED_PRECONDITION', `volume "${name}" is ${vol.sizeBytes} bytes; shrinking to ${size} is not supported`);
    }
    if (size === vol.sizeBytes) return this.#volumeInfo(vol);
    const before = vol.sizeBytes;
    vol.sizeBytes = size;
    try {
      await this.#saveMeta(() => {});
    } catch (err) {
      vol.sizeBytes = before;
      throw err;
    }
    this.#logger.info({ volume: name, sizeBytes: size }, 'volume resized');
    return this.#volumeInfo(vol);
  }

  getVolume(name: string): VolumeInfo {
    return this.#volumeInfo(this.#catalog.getVolume(name));
  }

  listVolumes(): VolumeInfo[] {
    return this.#catalog.list('volume').map((v) => this.#volumeInfo(v));
  }

  getSnapshot(name: string): SnapshotInfo {
    return this.#snapshotInfo(this.#catalog.getSnapshot(name));
  }

  listSnapshots(): SnapshotInfo[] {
    return this.#catalog.list('snapshot').map((s) => this.#snapshotInfo(s));
  }

  // --- flattening ----------------------------------------------------------------------------

  /** Schedules a flatten when a layer's chain got too long (reads walk the chain). */
  #maybeFlatten(layer: Layer): void {
    if (layer.depth <= MAX_CHAIN_DEPTH || !layer.parent) return;
    const parent = layer.parent;
    this.#maintenance = this.#maintenance.then(() => this.#flatten(parent)).catch((err: unknown) => {
      this.#logger.warn({ err: String(err) }, 'flattening a layer chain failed; reads stay correct, only longer');
    });
  }

  /**
   * Replaces a frozen layer, for its children, by one root layer holding the merged mappings
   * of its whole chain (metadata only). The new layer's map is made durable by a checkpoint
   * before pool.json names it.
   */
  async #flatten(frozen: Layer): Promise<void> {
    if (this.#closed || !this.#catalog.layers.has(frozen.id)) return;
    await this.#writer.flush(0); // frozen layers then hold no pending operations
    const merged = mergeChain(frozen);
    const flat = this.#catalog.newLayer(undefined, merged);
    flat.frozen = true;
    flat.flattened = true;
    await this.#checkpointNow(); // the flat layer's map is durable before anything names it
    // Equivalent content, so the switch may happen before pool.json records it.
    for (const child of this.#catalog.childrenOf(frozen)) if (child !== flat) child.parent = flat;
    for (const e of this.#catalog.exports.values()) if (e.top === frozen) e.top = flat;
    await this.#saveMeta(() => {});
    this.#logger.info({ layer: frozen.id, into: flat.id, blocks: merged.mappedCount }, 'layer chain flattened');
  }

  /** Resolves when background maintenance (flattening) scheduled so far is done. */
  idle(): Promise<void> {
    return this.#maintenance;
  }

  // --- stats -----------------------------------------------------------------------------------

  stats(): PoolStats {
    const c = this.#writer.counters;
    let logicalBlocks = 0;
    for (const e of this.#catalog.exports.values()) logicalBlocks += countVisibleBlocks(e.top);
    let uniqueBlocks = 0;
    for (const layer of this.#catalog.layers.values()) uniqueBlocks += layer.index.mappedCount;
    const physicalBytes = this.#usedBytes();
    const dedupSaved = this.#dedupSavings.savedBlocks(this.#catalog.exports.values());
    // Live references to one shared block are one block on disk.
    const liveBytes = (this.#usage.totalLive() - dedupSaved) * BLOCK_SIZE;
    return {
      logicalBytes: logicalBlocks * BLOCK_SIZE,
      physicalBytes,
      savedByClonesBytes: Math.max(0, logicalBlocks - uniqueBlocks) * BLOCK_SIZE,
      savedByDedupBytes: dedupSaved * BLOCK_SIZE,
      deadBytes: Math.max(0, physicalBytes - liveBytes),
      capacityBytes: this.#capacityBytes === Number.MAX_SAFE_INTEGER ? 0 : this.#capacityBytes,
      writesPerBatch: c.batches === 0 ? 0 : c.writeRequests / c.batches,
      flushesPerFdatasync: c.fdatasyncs === 0 ? 0 : c.flushRequests / c.fdatasyncs,
      batches: c.batches,
      fdatasyncs: c.fdatasyncs,
      volumes: this.#catalog.list('volume').length,
      readOnly: this.#writer.failure !== undefined,
      ...(this.#writer.failure === undefined ? {} : { readOnlyReason: this.#writer.failure.message }),
      segments: this.#segments.size,
      segmentsCleaned: this.#cleaner.counters.segmentsCleaned,
      blocksRelocated: this.#cleaner.counters.blocksRelocated,
      segmentsDamaged: this.#cleaner.counters.segmentsDamaged,
      checksumFailures: this.#checksums.failures,
      cacheBytes: this.#cache.capacityBlocks * BLOCK_SIZE,
      cacheHits: this.#cache.hits,
      cacheMisses: this.#cache.misses,
      dedupReferencedBlocks: this.#dedup.referencedBlocks,
    };
  }

  // --- ExportProvider ------------------------------------------------------------------------

  openExport(name: string): BlockDevice {
    this.#checkOpen();
    return new VolumeHandle(this.#catalog.getExport(name), this.#io);
  }

  listExports(): string[] {
    return [...this.#catalog.exports.keys()].sort();
  }

  // --- lifecycle -----------------------------------------------------------------------------

  /** Writes and syncs everything, saves a checkpoint so the next open replays nothing. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#maintenance;
    this.#closed = true;
    if (this.#cleanTimer) clearInterval(this.#cleanTimer);
    await this.#cleaning;
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

  #volumeInfo(v: VolumeState): VolumeInfo {
    return { name: v.name, sizeBytes: v.sizeBytes, allocatedBytes: countVisibleBlocks(v.top) * BLOCK_SIZE, createdAtMs: v.createdAtMs, openHandles: v.openHandles };
  }

  #snapshotInfo(s: VolumeState): SnapshotInfo {
    return { name: s.name, sourceVolume: s.sourceVolume, sizeBytes: s.sizeBytes, allocatedBytes: countVisibleBlocks(s.top) * BLOCK_SIZE, createdAtMs: s.createdAtMs };
  }

  /**
   * Metadata writes are serialized: each writes the tables as they are when its turn comes
   * (volumes already named by their `nextTop`), then runs `afterDurable` (the in-memory
   * switch), then drops layers nothing reaches any more.
   */
  #saveMeta(afterDurable: () => void): Promise<void> {
    const run = async () => {
      Object.assign(this.#meta, this.#catalog.toMeta());
      await writePoolMeta(this.#storage, this.#meta);
      afterDurable();
      this.#catalog.collectGarbage();
    };
    const next = this.#metaChain.then(run, run);
    this.#metaChain = next.catch(() => {});
    return next;
  }
}

/** The merged mappings of a chain, top layer winning (holes fall through, marks do not). */
function mergeChain(top: Layer): BlockMap {
  const chain: Layer[] = [];
  for (let l: Layer | undefined = top; l; l = l.parent) chain.unshift(l);
  const merged = new BlockMap();
  for (const layer of chain) {
    assert.ok(!layer.hasPending, 'flattening a layer with operations in flight');
    layer.index.forEach(0, LBA_LIMIT, (lba, value) => merged.set(lba, value));
  }
  return merged;
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
