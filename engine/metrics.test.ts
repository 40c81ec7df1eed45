/**
 * The metrics as Prometheus sees them: one reading of the pool's stats per scrape, exact
 * integer counters, the read-only gauge, and the HTTP server answering a real GET.
 */
import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from './logger.ts';
import { EngineMetrics } from './metrics.ts';
import type { MetricsSource } from './metrics.ts';
import { MetricsServer } from './metrics-server.ts';
import type { PoolStats } from './volume-manager.ts';

function stats(overrides: Partial<PoolStats> = {}): PoolStats {
  return {
    logicalBytes: 3 * 2 ** 30,
    physicalBytes: 2 ** 31,
    savedByClonesBytes: 2 ** 30,
    savedByDedupBytes: 0,
    deadBytes: 12288,
    capacityBytes: 2 ** 40,
    writesPerBatch: 7001 / 3,
    flushesPerFdatasync: 10 / 3,
    batches: 3,
    fdatasyncs: 3,
    volumes: 5,
    readOnly: false,
    segments: 33,
    segmentsCleaned: 2 ** 33 + 1,
    blocksRelocated: 4,
    segmentsDamaged: 1,
    checksumFailures: 2,
    cacheBytes: 64 * 2 ** 20,
    cacheHits: 900,
    cacheMisses: 100,
    dedupReferencedBlocks: 77,
    ...overrides,
  };
}

class FakeSource implements MetricsSource {
  current = stats();
  connections = 0;
  reads = 0;
  stats(): PoolStats {
    this.reads++;
    return this.current;
  }
  nbdConnections(): number {
    return this.connections;
  }
}

/** The value of an unlabelled sample in the text exposition. */
function sample(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no sample ${name} in:\n${text}`);
  return Number(m[1]);
}

describe('EngineMetrics', () => {
  it('exposes the pool figures, exact counters and the connection count from one stats reading', async () => {
    const source = new FakeSource();
    source.connections = 2;
    const text = await new EngineMetrics(source).render();
    expect(source.reads).toBe(1);
    expect(sample(text, 'braid_pool_logical_bytes')).toBe(3 * 2 ** 30);
    expect(sample(text, 'braid_pool_physical_bytes')).toBe(2 ** 31);
    expect(sample(text, 'braid_pool_dead_bytes')).toBe(12288);
    expect(sample(text, 'braid_pool_capacity_bytes')).toBe(2 ** 40);
    expect(sample(text, 'braid_pool_read_only')).toBe(0);
    expect(sample(text, 'braid_pool_volumes')).toBe(5);
    expect(sample(text, 'braid_log_segments')).toBe(33);
    expect(sample(text, 'braid_log_batches_total')).toBe(3);
    expect(sample(text, 'braid_log_fdatasyncs_total')).toBe(3);
    // Averages times their denominators give back the pool's integer counts.
    expect(sample(text, 'braid_log_write_requests_total')).toBe(7001);
    expect(sample(text, 'braid_log_flush_requests_total')).toBe(10);
    expect(sample(text, 'braid_log_writes_per_batch')).toBeCloseTo(7001 / 3);
    expect(sample(text, 'braid_cleaner_segments_cleaned_total')).toBe(2 ** 33 + 1);
    expect(sample(text, 'braid_cleaner_blocks_relocated_total')).toBe(4);
    expect(sample(text, 'braid_nbd_connections')).toBe(2);
    expect(sample(text, 'braid_cleaner_segments_damaged')).toBe(1);
    expect(sample(text, 'braid_read_checksum_failures_total')).toBe(2);
    expect(sample(text, 'braid_cache_bytes')).toBe(64 * 2 ** 20);
    expect(sample(text, 'braid_cache_hits_total')).toBe(900);
    expect(sample(text, 'braid_cache_misses_total')).toBe(100);
    expect(sample(text, 'braid_dedup_referenced_blocks_total')).toBe(77);
    expect(text).toMatch(/^# TYPE braid_log_batches_total counter$/m);
    expect(text).toMatch(/^# TYPE braid_pool_read_only gauge$/m);
  });

  it('follows the pool from scrape to scrape: counters are the totals, not sums of scrapes', async () => {
    const source = new FakeSource();
    const metrics = new EngineMetrics(source);
    await metrics.render();
    source.current = stats({ batches: 10, readOnly: true, readOnlyReason: 'log write failed: EIO' });
    source.connections = 0;
    const text = await metrics.render();
    expect(sample(text, 'braid_log_batches_total')).toBe(10);
    expect(sample(text, 'braid_pool_read_only')).toBe(1);
    expect(source.reads).toBe(2);
  });

  it('adds the process metrics when asked', async () => {
    const text = await new EngineMetrics(new FakeSource(), { processMetrics: true }).render();
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds /m);
  });
});

interface HttpReply {
  status: number;
  contentType: string | undefined;
  body: string;
}

function get(address: string, path: string, method = 'GET'): Promise<HttpReply> {
  const url = new URL(`http://${address}${path}`);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port, path: url.pathname, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('MetricsServer', () => {
  let server: MetricsServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  it('answers GET /metrics with the text format, and 404 / 405 otherwise', async () => {
    const source = new FakeSource();
    server = new MetricsServer(new EngineMetrics(source), silentLogger);
    const address = await server.listen('127.0.0.1', 0);
    expect(address).toMatch(/^127\.0\.0\.1:\d+$/);
    const ok = await get(address, '/metrics');
    expect(ok.status).toBe(200);
    expect(ok.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(sample(ok.body, 'braid_pool_volumes')).toBe(5);
    expect((await get(address, '/metrics?x=1')).status).toBe(200);
    expect((await get(address, '/')).status).toBe(404);
    expect((await get(address, '/metrics/../etc')).status).toBe(404);
    expect((await get(address, '/metrics', 'POST')).status).toBe(405);
    const head = await get(address, '/metrics', 'HEAD');
    expect(head).toMatchObject({ status: 200, body: '' });
  });

  it('serves on IPv6 loopback written in brackets', async () => {
    server = new MetricsServer(new EngineMetrics(new FakeSource()), silentLogger);
    let address: string;
    try {
      address = await server.listen('[::1]', 0);
    } catch (err) {
      // A machine without IPv6 cannot run this case; say so rather than pass silently.
      console.warn(`skipping the IPv6 case: ${(err as Error).message}`);
      return;
    }
    expect(address).toMatch(/^\[::1\]:\d+$/);
    expect((await get(address, '/metrics')).status).toBe(200);
  });

  it('answers 500 and keeps serving when the pool cannot give its stats', async () => {
    const source = new FakeSource();
    let fail = true;
    source.stats = () => {
      if (fail) throw new Error('pool closed');
      return stats();
    };
    server = new MetricsServer(new EngineMetrics(source), silentLogger);
    const address = await server.listen('127.0.0.1', 0);
    expect((await get(address, '/metrics')).status).toBe(500);
    fail = false;
    expect((await get(address, '/metrics')).status).toBe(200);
  });

  it('reports an address it cannot bind as a clear error', async () => {
    const first = new MetricsServer(new EngineMetrics(new FakeSource()), silentLogger);
    const address = await first.listen('127.0.0.1', 0);
    try {
      const port = Number(address.split(':')[1]);
      server = new MetricsServer(new EngineMetrics(new FakeSource()), silentLogger);
      await expect(server.listen('127.0.0.1', port)).rejects.toMatchObject({
        code: 'FAILED_PRECONDITION',
        message: expect.stringMatching(/cannot serve metrics on 127\.0\.0\.1:\d+: .*EADDRINUSE/),
      });
      server = undefined;
    } finally {
      await first.close();
    }
  });
});
