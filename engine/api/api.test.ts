/**
 * The engine API end to end: the real server and the real client over a unix socket in a temp
 * directory, with an in-memory VolumeManager behind the server.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EngineError } from '../errors.ts';
import { FakeVolumeManager, FAKE_MAX_VOLUME_SIZE_BYTES } from '../../test/fixtures/fake-volume-manager.ts';
import { MemoryLogger } from '../../test/fixtures/memory-logger.ts';
import { EngineClient, EngineNotRunningError } from './client.ts';
import { engineMethod } from './proto.ts';
import { EngineApiServer } from './server.ts';
import { EngineApiError } from './status.ts';

const GiB = 2 ** 30;

let dir: string;
let socketPath: string;
let manager: FakeVolumeManager;
let logger: MemoryLogger;
let server: EngineApiServer;
let client: EngineClient;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-api-'));
  socketPath = join(dir, 'engine.sock');
  manager = new FakeVolumeManager({ capacityBytes: 3 * 2 ** 40 + 12345 });
  logger = new MemoryLogger();
  server = new EngineApiServer({ manager, logger });
  await server.listen(socketPath);
  client = EngineClient.connect(socketPath);
});

afterEach(async () => {
  client.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('every RPC', () => {
  it('creates, gets, lists, resizes and deletes volumes', async () => {
    const created = await client.createVolume('vm1', GiB);
    expect(created).toEqual({ name: 'vm1', sizeBytes: GiB, allocatedBytes: 0, createdAtMs: manager.nowMs, openHandles: 0 });
    await client.createVolume('a-first', 4096);

    expect(await client.getVolume('vm1')).toEqual(created);
    expect((await client.listVolumes()).map((v) => v.name)).toEqual(['a-first', 'vm1']);

    const resized = await client.resizeVolume('vm1', 2 * GiB);
    expect(resized.sizeBytes).toBe(2 * GiB);
    expect(manager.volumes.get('vm1')?.sizeBytes).toBe(2 * GiB);

    await client.deleteVolume('vm1');
    expect(manager.volumes.has('vm1')).toBe(false);
    expect((await client.listVolumes()).map((v) => v.name)).toEqual(['a-first']);
  });

  it('lists an empty pool as an empty array', async () => {
    expect(await client.listVolumes()).toEqual([]);
  });

  it('returns pool stats with every field', async () => {
    await client.createVolume('vm1', GiB);
    expect(await client.stats()).toEqual(manager.stats());
  });

  it('logs each call at debug level', async () => {
    await client.getVolume('nope').catch(() => {});
    await client.listVolumes();
    const rpcs = logger.entries.filter((e) => e.level === 'debug').map((e) => [e.fields['rpc'], e.msg]);
    expect(rpcs).toContainEqual(['GetVolume', 'engine API call']);
    expect(rpcs).toContainEqual(['GetVolume', 'engine API call refused']);
    expect(rpcs).toContainEqual(['ListVolumes', 'engine API call done']);
  });
});

describe('errors round-trip with their engine code and message', () => {
  it('NOT_FOUND', async () => {
    const err = await rejection(client.getVolume('missing'));
    expect(err).toBeInstanceOf(EngineError);
    expect(err).toMatchObject({ code: 'NOT_FOUND', message: 'volume "missing" not found' });
    expect(await rejection(client.deleteVolume('missing'))).toMatchObject({ code: 'NOT_FOUND' });
    expect(await rejection(client.resizeVolume('missing', GiB))).toMatchObject({ code: 'NOT_FOUND' });
  });

  it('ALREADY_EXISTS', async () => {
    await client.createVolume('vm1', GiB);
    const err = await rejection(client.createVolume('vm1', GiB));
    expect(err).toBeInstanceOf(EngineError);
    expect(err).toMatchObject({ code: 'ALREADY_EXISTS', message: 'volume "vm1" already exists' });
  });

  it('INVALID_ARGUMENT for a bad name and a bad size', async () => {
    expect(await rejection(client.createVolume('Bad/Name', GiB))).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await rejection(client.createVolume('vm1', 0))).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await rejection(client.createVolume('vm1', 1000))).toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('keeps codes that share a gRPC status apart (BUSY, READ_ONLY, FAILED_PRECONDITION)', async () => {
    await client.createVolume('vm1', 2 * GiB);
    for (const code of ['BUSY', 'READ_ONLY', 'UNSUPPORTED_FORMAT', 'IO_ERROR', 'CORRUPTION', 'NO_SPACE', 'OUT_OF_RANGE'] as const) {
      manager.failNext(new EngineError(code, `injected ${code}`));
      expect(await rejection(client.deleteVolume('vm1'))).toMatchObject({ code, message: `injected ${code}` });
    }
    expect(await rejection(client.resizeVolume('vm1', GiB))).toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('turns an unexpected error into INTERNAL and logs it', async () => {
    manager.failNext(new TypeError('boom'));
    const err = await rejection(client.listVolumes());
    expect(err).toBeInstanceOf(EngineApiError);
    expect(err).not.toBeInstanceOf(EngineError);
    expect(err).toMatchObject({ grpcCode: grpc.status.INTERNAL, message: 'internal error: boom' });
    const logged = logger.entries.find((e) => e.level === 'error');
    expect(logged?.fields['rpc']).toBe('ListVolumes');
    expect(logged?.fields['err']).toBeInstanceOf(TypeError);
  });
});

describe('sizes', () => {
  it('are exact above 2^32', async () => {
    const sizeBytes = 2 ** 40 + 4096;
    expect((await client.createVolume('big', sizeBytes)).sizeBytes).toBe(sizeBytes);
    expect((await client.resizeVolume('big', FAKE_MAX_VOLUME_SIZE_BYTES)).sizeBytes).toBe(FAKE_MAX_VOLUME_SIZE_BYTES);
    expect((await client.getVolume('big')).sizeBytes).toBe(FAKE_MAX_VOLUME_SIZE_BYTES);
    expect((await client.stats()).capacityBytes).toBe(3 * 2 ** 40 + 12345);
  });

  it('are refused by the client when not a safe integer', async () => {
    expect(await rejection(client.createVolume('vm1', 2 ** 53))).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await rejection(client.createVolume('vm1', 1.5))).toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('above 2^53 on the wire are refused by the server, not rounded', async () => {
    const raw = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure());
    const method = engineMethod('CreateVolume');
    const err = await new Promise<grpc.ServiceError | null>((resolve) => {
      raw.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        { name: 'huge', sizeBytes: '18446744073709551615' },
        (e) => resolve(e),
      );
    });
    raw.close();
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(manager.volumes.size).toBe(0);
  });
});

describe('the socket', () => {
  it('is created with mode 0600 by default', async () => {
    expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
  });

  it('takes another mode when asked', async () => {
    const other = new EngineApiServer({ manager, logger });
    const path = join(dir, 'other.sock');
    await other.listen(path, 0o660);
    expect((await stat(path)).mode & 0o777).toBe(0o660);
    await other.close();
  });

  it('is removed on close', async () => {
    await server.close();
    expect(existsSync(socketPath)).toBe(false);
  });

  it('left stale by a crash does not stop a restart', async () => {
    const path = join(dir, 'stale.sock');
    await leaveStaleSocket(path);
    expect((await stat(path)).isSocket()).toBe(true);
    const restarted = new EngineApiServer({ manager, logger });
    await restarted.listen(path);
    const c = EngineClient.connect(path);
    expect(await c.listVolumes()).toEqual([]);
    c.close();
    await restarted.close();
  });

  it('is not taken from a live listener', async () => {
    const second = new EngineApiServer({ manager, logger });
    expect(await rejection(second.listen(socketPath))).toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(await client.listVolumes()).toEqual([]);
  });

  it('does not replace a file that is not a socket', async () => {
    const path = join(dir, 'file.sock');
    await writeFile(path, 'data');
    const other = new EngineApiServer({ manager, logger });
    expect(await rejection(other.listen(path))).toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('path longer than a unix socket allows is a clear error', async () => {
    const other = new EngineApiServer({ manager, logger });
    const err = await rejection(other.listen(join(dir, 'x'.repeat(120), 'engine.sock')));
    expect(err).toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect((err as Error).message).toMatch(/longer than the 107/);
  });
});

describe('a client without an engine', () => {
  it('fails with EngineNotRunningError when the socket does not exist', async () => {
    const c = EngineClient.connect(join(dir, 'none.sock'));
    const err = await rejection(c.listVolumes());
    c.close();
    expect(err).toBeInstanceOf(EngineNotRunningError);
    expect(err).toMatchObject({ code: 'FAILED_PRECONDITION', socketPath: join(dir, 'none.sock') });
  });

  it('fails with EngineNotRunningError when the socket is stale', async () => {
    const path = join(dir, 'stale.sock');
    await leaveStaleSocket(path);
    const c = EngineClient.connect(path);
    const err = await rejection(c.stats());
    c.close();
    expect(err).toBeInstanceOf(EngineNotRunningError);
  });
});

/** A socket file whose listener is gone, as a kill -9 leaves it. */
async function leaveStaleSocket(path: string): Promise<void> {
  const script = `require('node:net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`;
  const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  // The listener is gone; connecting is refused.
  await new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve() : reject(err)));
    probe.listen(path, () => reject(new Error('stale socket was not left behind')));
  });
}
