/**
 * The daemon's wiring and its start/stop order, with the pool and the NBD server replaced by
 * fakes (their own tests cover them) and the real engine API server and client.
 */
import { mkdtemp, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EngineClient } from './api/client.ts';
import type { BlockDevice, ExportProvider } from './block-device.ts';
import { EngineError } from './errors.ts';
import { silentLogger } from './logger.ts';
import type { Logger } from './logger.ts';

const fakes = vi.hoisted(() => ({
  events: [] as string[],
  lockedDirs: new Set<string>(),
  failPoolOpen: undefined as Error | undefined,
  failNbdListen: undefined as Error | undefined,
  failNbdClose: undefined as Error | undefined,
  poolOptions: [] as Array<{ dir: string; capacityBytes?: number }>,
  nbdListens: [] as Array<{ socketPath: string; mode: number | undefined }>,
}));

vi.mock('./pool.ts', async () => {
  const { FakeVolumeManager: Base } = await import('../test/fixtures/fake-volume-manager.ts');
  const { EngineError: Err } = await import('./errors.ts');
  class Pool extends Base implements ExportProvider {
    readonly dir: string;
    constructor(dir: string) {
      super();
      this.dir = dir;
    }
    static async open(opts: { dir: string; logger: Logger; capacityBytes?: number }): Promise<Pool> {
      fakes.poolOptions.push({ dir: opts.dir, ...(opts.capacityBytes === undefined ? {} : { capacityBytes: opts.capacityBytes }) });
      if (fakes.failPoolOpen) throw fakes.failPoolOpen;
      if (fakes.lockedDirs.has(opts.dir)) throw new Err('FAILED_PRECONDITION', `pool ${opts.dir} is locked by another engine`);
      fakes.lockedDirs.add(opts.dir);
      fakes.events.push('pool.open');
      return new Pool(opts.dir);
    }
    openExport(name: string): BlockDevice {
      throw new Err('NOT_FOUND', `volume ${JSON.stringify(name)} not found`);
    }
    listExports(): string[] {
      return [...this.volumes.keys()];
    }
    async close(): Promise<void> {
      fakes.lockedDirs.delete(this.dir);
      fakes.events.push('pool.close');
    }
  }
  return { Pool };
});

vi.mock('./nbd/server.ts', () => {
  class NbdServer {
    constructor(_opts: { exports: ExportProvider; logger: Logger }) {}
    async listen(socketPath: string, mode?: number): Promise<void> {
      fakes.nbdListens.push({ socketPath, mode });
      if (fakes.failNbdListen) throw fakes.failNbdListen;
      fakes.events.push('nbd.listen');
    }
    async close(): Promise<void> {
      fakes.events.push('nbd.close');
      if (fakes.failNbdClose) throw fakes.failNbdClose;
    }
  }
  return { NbdServer };
});

// Imported after the mocks are declared (vi.mock is hoisted above imports anyway).
const { startEngineDaemon } = await import('./daemon.ts');

let root: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'braid-daemon-'));
  fakes.events.length = 0;
  fakes.lockedDirs.clear();
  fakes.poolOptions.length = 0;
  fakes.nbdListens.length = 0;
  fakes.failPoolOpen = undefined;
  fakes.failNbdListen = undefined;
  fakes.failNbdClose = undefined;
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('startEngineDaemon', () => {
  it('creates the directory, serves NBD and the API, and closes in reverse order', async () => {
    const dir = join(root, 'a', 'pool');
    const daemon = await startEngineDaemon({ dir, logger: silentLogger });

    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect(daemon.engineSocketPath).toBe(join(dir, 'engine.sock'));
    expect(daemon.nbdSocketPath).toBe(join(dir, 'nbd.sock'));
    expect(fakes.nbdListens).toEqual([{ socketPath: join(dir, 'nbd.sock'), mode: 0o600 }]);
    expect((await stat(daemon.engineSocketPath)).mode & 0o777).toBe(0o600);

    const client = EngineClient.connect(daemon.engineSocketPath);
    await client.createVolume('vm1', 2 ** 30);
    expect(daemon.pool.listExports()).toEqual(['vm1']);
    client.close();

    await daemon.close();
    await daemon.close();
    expect(fakes.events).toEqual(['pool.open', 'nbd.listen', 'nbd.close', 'pool.close']);
    expect(existsSync(daemon.engineSocketPath)).toBe(false);
  });

  it('passes the capacity and the socket mode through', async () => {
    const daemon = await startEngineDaemon({ dir: root, logger: silentLogger, capacityBytes: 5 * 2 ** 40, socketMode: 0o660 });
    expect(fakes.poolOptions).toEqual([{ dir: root, capacityBytes: 5 * 2 ** 40 }]);
    expect(fakes.nbdListens[0]?.mode).toBe(0o660);
    expect((await stat(daemon.engineSocketPath)).mode & 0o777).toBe(0o660);
    await daemon.close();
  });

  it('refuses a second daemon on the same directory and leaves the first one serving', async () => {
    const first = await startEngineDaemon({ dir: root, logger: silentLogger });
    const err = await rejection(startEngineDaemon({ dir: root, logger: silentLogger }));
    expect(err).toBeInstanceOf(EngineError);
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION' });

    const client = EngineClient.connect(first.engineSocketPath);
    expect(await client.listVolumes()).toEqual([]);
    client.close();
    await first.close();
  });

  it('closes the pool when NBD fails to start', async () => {
    fakes.failNbdListen = new EngineError('FAILED_PRECONDITION', 'nbd.sock in use');
    expect(await rejection(startEngineDaemon({ dir: root, logger: silentLogger }))).toBe(fakes.failNbdListen);
    expect(fakes.events).toEqual(['pool.open', 'pool.close']);
    expect(fakes.lockedDirs.size).toBe(0);
  });

  it('closes NBD and then the pool when the API fails to start', async () => {
    await writeFile(join(root, 'engine.sock'), 'not a socket');
    const err = await rejection(startEngineDaemon({ dir: root, logger: silentLogger }));
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(fakes.events).toEqual(['pool.open', 'nbd.listen', 'nbd.close', 'pool.close']);
  });

  it('does not start anything when the pool cannot open', async () => {
    fakes.failPoolOpen = new EngineError('UNSUPPORTED_FORMAT', 'pool format 9 is newer than this engine');
    expect(await rejection(startEngineDaemon({ dir: root, logger: silentLogger }))).toBe(fakes.failPoolOpen);
    expect(fakes.events).toEqual([]);
    expect(fakes.nbdListens).toEqual([]);
  });

  it.skipIf(process.getuid?.() === 0)('fails when the directory cannot be created', async () => {
    await mkdir(join(root, 'ro'), { mode: 0o500 });
    const err = await rejection(startEngineDaemon({ dir: join(root, 'ro', 'pool'), logger: silentLogger }));
    expect(err).toMatchObject({ code: 'EACCES' });
    expect(fakes.poolOptions).toEqual([]);
  });

  it('still closes the pool when closing NBD fails, then reports the failure', async () => {
    const daemon = await startEngineDaemon({ dir: root, logger: silentLogger });
    fakes.failNbdClose = new Error('nbd close failed');
    expect(await rejection(daemon.close())).toBe(fakes.failNbdClose);
    expect(fakes.events).toEqual(['pool.open', 'nbd.listen', 'nbd.close', 'pool.close']);
  });
});
