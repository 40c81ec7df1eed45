/**
 * The engine's Prometheus metrics. Everything is read on scrape from the pool's own figures
 * (`Pool.stats()`, the NBD server's connection count): the I/O path does no extra work for
 * metrics, and a pool without a scraper pays nothing.
 *
 * Totals the engine keeps since start are exposed as counters (a restart resets them, which
 * Prometheus' rate() handles); levels are gauges. Names follow Prometheus' conventions: a
 * `braid_` prefix, the unit last, `_total` on counters.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { PoolStats } from './volume-manager.ts';

/** Where the figures come from; the daemon wires the pool and the NBD server in. */
export interface MetricsSource {
  stats(): PoolStats;
  nbdConnections(): number;
}

export interface EngineMetricsOptions {
  /** Node's process metrics (CPU, memory, event-loop delay, GC) too; on in the daemon. */
  processMetrics?: boolean;
}

type Read = (s: PoolStats) => number;

export class EngineMetrics {
  readonly registry = new Registry();
  readonly #source: MetricsSource;
  /** The stats of the scrape in progress: one Pool.stats() call answers every metric. */
  #snapshot: PoolStats | undefined;

  constructor(source: MetricsSource, opts: EngineMetricsOptions = {}) {
    this.#source = source;
    if (opts.processMetrics) collectDefaultMetrics({ register: this.registry });

    this.#gauge('braid_pool_logical_bytes', 'Written (mapped) bytes summed over all volumes and snapshots.', (s) => s.logicalBytes);
    this.#gauge('braid_pool_physical_bytes', 'Bytes of the log on disk, live and dead.', (s) => s.physicalBytes);
    this.#gauge('braid_pool_dead_bytes', 'Bytes on disk no volume references any more, awaiting the cleaner.', (s) => s.deadBytes);
    this.#gauge('braid_pool_capacity_bytes', 'Pool capacity; 0 when none was set (bounded by the disk).', (s) => s.capacityBytes);
    this.#gauge('braid_pool_saved_by_clones_bytes', 'Bytes clones and snapshots share instead of storing again.', (s) => s.savedByClonesBytes);
    this.#gauge('braid_pool_saved_by_dedup_bytes', 'Bytes inline dedup stored once instead of again.', (s) => s.savedByDedupBytes);
    this.#gauge('braid_pool_read_only', '1 when a failed log write or fdatasync turned the pool read-only until restart.', (s) => (s.readOnly ? 1 : 0));
    this.#gauge('braid_pool_volumes', 'Volumes in the pool.', (s) => s.volumes);
    this.#gauge('braid_log_segments', 'Segment files of the log.', (s) => s.segments);
    this.#gauge('braid_log_writes_per_batch', 'Average write requests per log batch since start (write coalescing).', (s) => s.writesPerBatch);
    this.#gauge('braid_log_flushes_per_fdatasync', 'Average flush requests answered per fdatasync since start (group commit).', (s) => s.flushesPerFdatasync);
    this.#counter('braid_log_batches_total', 'Log batches written since start.', (s) => s.batches);
    this.#counter('braid_log_fdatasyncs_total', 'fdatasync calls on the log since start.', (s) => s.fdatasyncs);
    // The pool reports these two as averages; the products give back its exact integer counts.
    this.#counter('braid_log_write_requests_total', 'Write requests (writes, trims, zeroes) logged since start.', (s) => Math.round(s.writesPerBatch * s.batches));
    this.#counter('braid_log_flush_requests_total', 'Flush requests (FLUSH and FUA) answered by an fdatasync since start.', (s) =>
      Math.round(s.flushesPerFdatasync * s.fdatasyncs),
    );
    this.#counter('braid_cleaner_segments_cleaned_total', 'Segments the cleaner emptied and removed since start.', (s) => s.segmentsCleaned);
    this.#counter('braid_cleaner_blocks_relocated_total', 'Live blocks the cleaner moved out of segments it cleaned, since start.', (s) => s.blocksRelocated);
    this.#gauge('braid_cleaner_segments_damaged', 'Segments the cleaner leaves alone because a live block in them failed its checksum.', (s) => s.segmentsDamaged);
    this.#counter('braid_read_checksum_failures_total', 'Blocks read from disk that failed their checksum since start (each read failed).', (s) => s.checksumFailures);
    this.#gauge('braid_cache_bytes', 'Size of the shared block cache.', (s) => s.cacheBytes);
    this.#counter('braid_cache_hits_total', 'Block cache hits since start.', (s) => s.cacheHits);
    this.#counter('braid_cache_misses_total', 'Block cache misses since start.', (s) => s.cacheMisses);
    this.#counter('braid_dedup_referenced_blocks_total', 'Blocks written as dedup references instead of data since start.', (s) => s.dedupReferencedBlocks);

    const connections = (): number => source.nbdConnections();
    new Gauge({
      name: 'braid_nbd_connections',
      help: 'Open NBD connections, handshaking ones included.',
      registers: [this.registry],
      collect() {
        this.set(connections());
      },
    });
  }

  /** The text exposition of every metric, from one fresh reading of the pool's stats. */
  async render(): Promise<string> {
    this.#snapshot = this.#source.stats();
    try {
      return await this.registry.metrics();
    } finally {
      this.#snapshot = undefined;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  #stats(): PoolStats {
    // Outside render() (a direct registry.metrics() call) read afresh.
    return this.#snapshot ?? this.#source.stats();
  }

  #gauge(name: string, help: string, read: Read): void {
    const stats = (): PoolStats => this.#stats();
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read(stats()));
      },
    });
  }

  #counter(name: string, help: string, read: Read): void {
    const stats = (): PoolStats => this.#stats();
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        // A counter has no set(): the engine's own total is the value.
        this.reset();
        this.inc(read(stats()));
      },
    });
  }
}
