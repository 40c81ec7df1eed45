/**
 * Fail-stop made visible: a pool whose fdatasync failed says so in its error log line, in
 * `Pool.stats()`, through the engine API, in `braid stats` and `--json`, and in the metrics.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EngineApiServer } from '../../engine/api/server.ts';
import { EngineError } from '../../engine/errors.ts';
import { EngineMetrics } from '../../engine/metrics.ts';
import { Pool } from '../../engine/pool.ts';
import { MemoryStorage } from '../../engine/storage/memory-storage.ts';
import { MemoryLogger } from '../../test/fixtures/memory-logger.ts';
import type { CliContext } from '../context.ts';
import { runCli } from '../run.ts';

const MiB = 2 ** 20;

let dir: string;
let pool: Pool;
let server: EngineApiServer;
let logger: MemoryLogger;
let storage: MemoryStorage;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-stats-'));
  logger = new MemoryLogger();
  storage = new MemoryStorage();
  pool = await Pool.openWithStorage(storage, { logger, segmentBytes: MiB });
  server = new EngineApiServer({ manager: pool, logger });
  await server.listen(join(dir, 'engine.sock'));
});

afterEach(async () => {
  await server.close();
  storage.faultHook = undefined;
  await pool.close().catch(() => {});
  await rm(dir, { recursive: true, force: true });
});

async function braid(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const ctx: CliContext = {
    stdout: (t) => out.push(t),
    stderr: (t) => err.push(t),
    env: {},
    startDaemon: () => Promise.reject(new Error('not in this test')),
    waitForShutdown: () => Promise.resolve('SIGTERM'),
    logStream: { write: () => true },
  };
  const code = await runCli([...args, '--data', dir], ctx);
  return { code, stdout: out.join(''), stderr: err.join('') };
}

async function failAnFdatasync(): Promise<void> {
  await pool.createVolume('vm1', MiB);
  const dev = pool.openExport('vm1');
  try {
    await dev.write(0, Buffer.alloc(4096, 1), false);
    storage.faultHook = (op) => (op === 'datasync' ? new EngineError('IO_ERROR', 'injected EIO') : undefined);
    await expect(dev.flush()).rejects.toMatchObject({ code: 'IO_ERROR' });
  } finally {
    dev.close();
  }
}

describe('a pool turned read-only by a failed fdatasync', () => {
  it('is reported while writable as read-write, with no reason', async () => {
    const json = JSON.parse((await braid(['stats', '--json'])).stdout) as Record<string, unknown>;
    expect(json['readOnly']).toBe(false);
    expect(json).not.toHaveProperty('readOnlyReason');
    expect((await braid(['stats'])).stdout).toMatch(/^state\s+read-write$/m);
  });

  it('logs one error line, and says so in stats, the API, the CLI and the metrics', async () => {
    await failAnFdatasync();

    const errors = logger.entries.filter((e) => e.level === 'error');
    expect(errors).toHaveLength(1);
    expect(errors[0]!.msg).toMatch(/the pool turned read-only.*until the engine restarts/);
    expect(errors[0]!.fields['err']).toMatch(/injected EIO/);

    const stats = pool.stats();
    expect(stats.readOnly).toBe(true);
    expect(stats.readOnlyReason).toMatch(/read-only until restart: injected EIO/);

    const json = JSON.parse((await braid(['stats', '--json'])).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ readOnly: true, readOnlyReason: stats.readOnlyReason });

    const text = await braid(['stats']);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^state\s+READ-ONLY: .*injected EIO$/m);

    const metrics = await new EngineMetrics({ stats: () => pool.stats(), nbdConnections: () => 0 }).render();
    expect(metrics).toMatch(/^braid_pool_read_only 1$/m);
  });
});
