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

  it('carries the log and cleaner figures of the stats exactly', async () => {
    const stats = { ...manager.stats(), segments: 17, segmentsCleaned: 2 ** 33 + 1, blocksRelocated: 2 ** 40 + 3 };
    manager.stats = () => stats;
    expect(await client.stats()).toEqual(stats);
  });

  it('carries the read-only state and its reason, and no reason while writable', async () => {
    expect(await client.stats()).not.toHaveProperty('readOnlyReason');
    const stats = { ...manager.stats(), readOnly: true, readOnlyReason: 'log write failed, the pool is read-only until restart: EIO' };
    manager.stats = () => stats;
    expect(await client.stats()).toEqual(stats);
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

describe('snapshots and clones', () => {
  it('creates, gets, lists and deletes snapshots', async () => {
    await client.createVolume('vm1', GiB);
    manager.volumes.get('vm1')!.allocatedBytes = 3 * 4096;
    const snap = await client.createSnapshot('vm1', 'snap1');
    expect(snap).toEqual({ name: 'snap1', sourceVolume: 'vm1', sizeBytes: GiB, allocatedBytes: 3 * 4096, createdAtMs: manager.nowMs });
    expect(await client.getSnapshot('snap1')).toEqual(snap);

    manager.nowMs += 1000;
    const other = await client.createSnapshot('vm1', 'a-first');
    expect(other.createdAtMs).toBe(manager.nowMs);
    // Sorted by name, whatever order the manager keeps.
    expect((await client.listSnapshots()).map((s) => s.name)).toEqual(['a-first', 'snap1']);
    expect(await client.listSnapshots()).toContainEqual(snap);
    // Snapshots are not volumes.
    expect((await client.listVolumes()).map((v) => v.name)).toEqual(['vm1']);

    await client.deleteSnapshot('snap1');
    expect(manager.snapshots.has('snap1')).toBe(false);
    expect((await client.listSnapshots()).map((s) => s.name)).toEqual(['a-first']);
    expect(manager.volumes.has('vm1')).toBe(true);
  });

  it('lists no snapshots as an empty array', async () => {
    expect(await client.listSnapshots()).toEqual([]);
  });

  it('a snapshot outlives its volume and keeps naming it', async () => {
    await client.createVolume('vm1', GiB);
    await client.createSnapshot('vm1', 'snap1');
    await client.deleteVolume('vm1');
    expect(await client.getSnapshot('snap1')).toMatchObject({ sourceVolume: 'vm1', sizeBytes: GiB });
  });

  it('clones a volume and a snapshot, at the source size by default', async () => {
    await client.createVolume('vm1', GiB);
    manager.volumes.get('vm1')!.allocatedBytes = 8192;
    await client.createSnapshot('vm1', 'snap1');

    const fromVolume = await client.cloneVolume('vm1', 'c1');
    expect(fromVolume).toEqual({ name: 'c1', sizeBytes: GiB, allocatedBytes: 8192, createdAtMs: manager.nowMs, openHandles: 0 });
    const fromSnapshot = await client.cloneVolume('snap1', 'c2');
    expect(fromSnapshot).toMatchObject({ name: 'c2', sizeBytes: GiB });
    expect(await client.getVolume('c2')).toEqual(fromSnapshot);
    expect((await client.listVolumes()).map((v) => v.name)).toEqual(['c1', 'c2', 'vm1']);

    // Deleting the snapshot leaves its clone alone.
    await client.deleteSnapshot('snap1');
    expect(await client.getVolume('c2')).toEqual(fromSnapshot);
  });

  it('clones to a larger size', async () => {
    await client.createVolume('vm1', GiB);
    expect((await client.cloneVolume('vm1', 'c1', 2 * GiB)).sizeBytes).toBe(2 * GiB);
    expect((await client.cloneVolume('vm1', 'c2', GiB)).sizeBytes).toBe(GiB);
  });

  it('sends dedup with CreateVolume; clones and snapshots inherit it', async () => {
    await client.createVolume('plain', GiB);
    await client.createVolume('deduped', GiB, { dedup: true });
    expect([...manager.dedup]).toEqual(['deduped']);
    await client.cloneVolume('deduped', 'c1');
    await client.createSnapshot('deduped', 'snap1');
    await client.cloneVolume('snap1', 'c2');
    await client.cloneVolume('plain', 'c3');
    expect([...manager.dedup].sort()).toEqual(['c1', 'c2', 'deduped', 'snap1']);
  });

  it('on the wire, an absent dedup is false and an absent clone size is the source size', async () => {
    await client.createVolume('vm1', GiB);
    const raw = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure());
    const call = (name: 'CreateVolume' | 'CloneVolume', request: object): Promise<grpc.ServiceError | null> => {
      const method = engineMethod(name);
      return new Promise((resolve) => {
        raw.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, request, (e) => resolve(e));
      });
    };
    expect(await call('CreateVolume', { name: 'old-client', sizeBytes: '4096' })).toBeNull();
    expect(await call('CloneVolume', { source: 'vm1', name: 'c1' })).toBeNull();
    expect((await call('CloneVolume', { source: 'vm1', name: 'huge', sizeBytes: '18446744073709551615' }))?.code).toBe(
      grpc.status.INVALID_ARGUMENT,
    );
    raw.close();
    expect(manager.dedup.size).toBe(0);
    expect(manager.volumes.get('c1')?.sizeBytes).toBe(GiB);
    expect(manager.volumes.has('huge')).toBe(false);
  });

  it('keeps sizes above 2^32 exact', async () => {
    const sizeBytes = 2 ** 40 + 4096;
    await client.createVolume('big', sizeBytes);
    manager.volumes.get('big')!.allocatedBytes = 2 ** 33 + 8192;
    expect(await client.createSnapshot('big', 'snap')).toMatchObject({ sizeBytes, allocatedBytes: 2 ** 33 + 8192 });
    expect((await client.cloneVolume('snap', 'c1')).sizeBytes).toBe(sizeBytes);
    expect((await client.cloneVolume('snap', 'c2', FAKE_MAX_VOLUME_SIZE_BYTES)).sizeBytes).toBe(FAKE_MAX_VOLUME_SIZE_BYTES);
  });

  it('logs the new RPCs like the others', async () => {
    await client.createVolume('vm1', GiB);
    await client.createSnapshot('vm1', 's1');
    await client.cloneVolume('s1', 'c1');
    await client.listSnapshots();
    await client.getSnapshot('s1');
    await client.deleteSnapshot('s1');
    const done = logger.entries.filter((e) => e.msg === 'engine API call done').map((e) => e.fields['rpc']);
    expect(done).toEqual(expect.arrayContaining(['CreateSnapshot', 'CloneVolume', 'ListSnapshots', 'GetSnapshot', 'DeleteSnapshot']));
  });

  describe('errors', () => {
    beforeEach(async () => {
      await client.createVolume('vm1', GiB);
      await client.createSnapshot('vm1', 'snap1');
    });

    it('NOT_FOUND for a missing snapshot, volume or source', async () => {
      const err = await rejection(client.getSnapshot('missing'));
      expect(err).toBeInstanceOf(EngineError);
      expect(err).toMatchObject({ code: 'NOT_FOUND', message: 'snapshot "missing" not found' });
      expect(await rejection(client.deleteSnapshot('missing'))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rejection(client.createSnapshot('missing', 's2'))).toMatchObject({
        code: 'NOT_FOUND',
        message: 'volume "missing" not found',
      });
      expect(await rejection(client.cloneVolume('missing', 'c1'))).toMatchObject({
        code: 'NOT_FOUND',
        message: 'no volume or snapshot named "missing"',
      });
    });

    it('NOT_FOUND across kinds: a snapshot is not a volume and the other way round', async () => {
      expect(await rejection(client.createSnapshot('snap1', 's2'))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rejection(client.deleteSnapshot('vm1'))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rejection(client.getSnapshot('vm1'))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rejection(client.deleteVolume('snap1'))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rejection(client.resizeVolume('snap1', 2 * GiB))).toMatchObject({ code: 'NOT_FOUND' });
      expect(await rejection(client.getVolume('snap1'))).toMatchObject({ code: 'NOT_FOUND' });
      expect(manager.snapshots.has('snap1')).toBe(true);
    });

    it('ALREADY_EXISTS in the one namespace of volumes and snapshots', async () => {
      const err = await rejection(client.createSnapshot('vm1', 'snap1'));
      expect(err).toBeInstanceOf(EngineError);
      expect(err).toMatchObject({ code: 'ALREADY_EXISTS', message: 'snapshot "snap1" already exists' });
      expect(await rejection(client.createSnapshot('vm1', 'vm1'))).toMatchObject({
        code: 'ALREADY_EXISTS',
        message: 'volume "vm1" already exists',
      });
      expect(await rejection(client.cloneVolume('vm1', 'snap1'))).toMatchObject({ code: 'ALREADY_EXISTS' });
      expect(await rejection(client.cloneVolume('snap1', 'vm1'))).toMatchObject({ code: 'ALREADY_EXISTS' });
      expect(await rejection(client.createVolume('snap1', GiB))).toMatchObject({
        code: 'ALREADY_EXISTS',
        message: 'snapshot "snap1" already exists',
      });
    });

    it('INVALID_ARGUMENT for bad names and sizes', async () => {
      expect(await rejection(client.createSnapshot('vm1', 'Bad/Name'))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        message: expect.stringMatching(/^invalid snapshot name "Bad\/Name"/),
      });
      expect(await rejection(client.cloneVolume('vm1', '.hidden'))).toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(await rejection(client.cloneVolume('vm1', 'c1', GiB / 2))).toMatchObject({
        code: 'INVALID_ARGUMENT',
        message: `a clone of "vm1" needs at least ${GiB} bytes; ${GiB / 2} requested`,
      });
      expect(await rejection(client.cloneVolume('snap1', 'c1', GiB + 1000))).toMatchObject({ code: 'INVALID_ARGUMENT' });
      // 0 means "the source's size" on the wire; the client refuses to send an explicit 0.
      expect(await rejection(client.cloneVolume('vm1', 'c1', 0))).toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(await rejection(client.cloneVolume('vm1', 'c1', 2 ** 53))).toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(manager.volumes.has('c1')).toBe(false);
    });

    it('keeps engine codes that share a gRPC status apart', async () => {
      manager.failNext(new EngineError('BUSY', 'snapshot "snap1" is in use by 1 connection(s)'));
      expect(await rejection(client.deleteSnapshot('snap1'))).toMatchObject({ code: 'BUSY' });
      manager.failNext(new EngineError('READ_ONLY', 'the pool is read-only'));
      expect(await rejection(client.createSnapshot('vm1', 's2'))).toMatchObject({ code: 'READ_ONLY' });
      manager.failNext(new EngineError('NO_SPACE', 'pool is full'));
      expect(await rejection(client.cloneVolume('vm1', 'c1'))).toMatchObject({ code: 'NO_SPACE' });
      manager.failNext(new EngineError('FAILED_PRECONDITION', 'volume "vm1" is being snapshotted or cloned; retry'));
      expect(await rejection(client.createSnapshot('vm1', 's3'))).toMatchObject({ code: 'FAILED_PRECONDITION' });
      manager.failNext(new TypeError('boom'));
      const err = await rejection(client.listSnapshots());
      expect(err).toBeInstanceOf(EngineApiError);
      expect(err).toMatchObject({ grpcCode: grpc.status.INTERNAL });
    });
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
