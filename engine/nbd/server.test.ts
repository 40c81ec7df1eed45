import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryExportProvider } from '../../test/fixtures/memory-device.ts';
import { isEngineError } from '../errors.ts';
import { NBD_CMD_READ, NBD_OPT_LIST, NBD_REP_ACK, NBD_REP_SERVER } from './protocol.ts';
import {
  greet,
  openExport,
  option,
  RawClient,
  readOptionReply,
  readSimpleReply,
  recordingLogger,
  request,
  startTestServer,
} from './test-support.ts';
import type { TestServer } from './test-support.ts';
import { NbdServer } from './server.ts';

let dir: string;
/** Servers started by a test; stopped here even when the test fails half-way. */
let started: TestServer[] = [];

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'braid-nbd-server-'));
});

afterEach(async () => {
  await Promise.all(started.map((t) => t.stop()));
  started = [];
  await fs.rm(dir, { recursive: true, force: true });
});

async function start(
  setup: Parameters<typeof startTestServer>[0],
  options: Parameters<typeof startTestServer>[1] = {},
): Promise<TestServer> {
  const t = await startTestServer(setup, options);
  started.push(t);
  return t;
}

function newServer(exports = new MemoryExportProvider(), maxConnections?: number) {
  const logger = recordingLogger();
  const server = new NbdServer(
    maxConnections === undefined ? { exports, logger } : { exports, logger, maxConnections },
  );
  return { server, logger, exports };
}

describe('listen', () => {
  it('creates the socket with mode 0600 by default', async () => {
    const { server } = newServer();
    const socketPath = path.join(dir, 'a.sock');
    await server.listen(socketPath);
    expect((await fs.stat(socketPath)).mode & 0o777).toBe(0o600);
    await server.close();
  });

  it('applies a given mode', async () => {
    const { server } = newServer();
    const socketPath = path.join(dir, 'b.sock');
    await server.listen(socketPath, 0o660);
    expect((await fs.stat(socketPath)).mode & 0o777).toBe(0o660);
    await server.close();
  });

  it('replaces a stale socket left by a killed process', async () => {
    const socketPath = path.join(dir, 'stale.sock');
    // A process that listens and is then killed leaves its socket file behind.
    const script = `require('net').createServer().listen(${JSON.stringify(socketPath)})`;
    const child = spawn(process.execPath, ['-e', script]);
    await vi.waitFor(async () => expect((await fs.lstat(socketPath)).isSocket()).toBe(true));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    const { server } = newServer();
    await server.listen(socketPath);
    const client = await RawClient.connect(socketPath);
    expect((await client.read(18)).subarray(0, 8).toString('latin1')).toBe('NBDMAGIC');
    client.destroy();
    await server.close();
  });

  it('refuses to remove a file that is not a socket', async () => {
    const filePath = path.join(dir, 'precious');
    await fs.writeFile(filePath, 'keep me');
    const { server } = newServer();
    const err: unknown = await server.listen(filePath).catch((e: unknown) => e);
    expect(isEngineError(err) && err.code).toBe('FAILED_PRECONDITION');
    expect(await fs.readFile(filePath, 'utf8')).toBe('keep me');
  });
});

describe('connections', () => {
  it('closes connections beyond maxConnections and logs it, keeping the others', async () => {
    const exports = new MemoryExportProvider();
    exports.create('vol', 1024 * 1024);
    const { server, logger } = newServer(exports, 1);
    const socketPath = path.join(dir, 'c.sock');
    await server.listen(socketPath);
    const first = await openExport(socketPath, 'vol');
    const second = await RawClient.connect(socketPath);
    await second.closed;
    expect(logger.records.some((r) => r.level === 'warn')).toBe(true);
    expect(server.connectionCount).toBe(1);
    first.client.write(request({ type: NBD_CMD_READ, handle: 1n, length: 512 }));
    expect((await readSimpleReply(first.client)).errno).toBe(0);
    first.client.destroy();
    await server.close();
  });

  it('logs refusals once per burst, not once per connection', async () => {
    const t = await start((exports) => exports.create('vol', 4096));
    // A server of its own with a limit of one (startTestServer's default is 1024).
    const { server, logger } = newServer(t.exports, 1);
    const socketPath = path.join(dir, 'burst.sock');
    await server.listen(socketPath);
    const first = await openExport(socketPath, 'vol');
    for (let i = 0; i < 30; i++) await (await RawClient.connect(socketPath)).closed;
    const limitLines = logger.records.filter((r) => r.msg?.includes('limit'));
    expect(limitLines).toHaveLength(1);
    first.client.destroy();
    await vi.waitFor(() => expect(server.connectionCount).toBe(0));
    const next = await openExport(socketPath, 'vol');
    expect(logger.records.find((r) => r.msg?.includes('accepted again'))?.obj).toEqual({ refusedInBurst: 30 });
    next.client.destroy();
    await server.close();
  });

  it('closes a connection that does not finish the handshake in time, and only such', async () => {
    const t = await start((exports) => exports.create('vol', 4096), { handshakeTimeoutMs: 100 });
    const silent = await RawClient.connect(t.socketPath);
    const halfway = await RawClient.connect(t.socketPath);
    await greet(halfway);
    const done = await openExport(t.socketPath, 'vol');
    await silent.closed;
    await halfway.closed;
    await vi.waitFor(() => expect(t.server.connectionCount).toBe(1));
    await new Promise((resolve) => setTimeout(resolve, 200));
    done.client.write(request({ type: NBD_CMD_READ, handle: 1n, length: 512 }));
    expect((await readSimpleReply(done.client)).errno).toBe(0);
    done.client.destroy();
  });

  it('answers options sent far ahead of a client that reads the replies only later', async () => {
    const t = await start((exports) => exports.create('vol', 4096));
    const client = await RawClient.connect(t.socketPath);
    await greet(client);
    const count = 20_000;
    // Not reading: the replies (about 1 MiB) fill the socket, and the server must wait for room.
    client.socket.pause();
    await client.writeAndFlush(Buffer.concat(Array.from({ length: count }, () => option(NBD_OPT_LIST))));
    await new Promise((resolve) => setTimeout(resolve, 100));
    client.socket.resume();
    for (let i = 0; i < count; i++) {
      expect((await readOptionReply(client)).type).toBe(NBD_REP_SERVER);
      expect((await readOptionReply(client)).type).toBe(NBD_REP_ACK);
    }
    client.destroy();
  });

  it('counts handshaking and transmitting connections until they are gone', async () => {
    const t = await start((exports) => exports.create('vol', 4096));
    const handshaking = await RawClient.connect(t.socketPath);
    await greet(handshaking);
    const transmitting = await openExport(t.socketPath, 'vol');
    expect(t.server.connectionCount).toBe(2);
    handshaking.destroy();
    transmitting.client.destroy();
    await vi.waitFor(() => expect(t.server.connectionCount).toBe(0));
  });
});

describe('close', () => {
  it('lets in-flight requests finish and be answered, then releases every handle', async () => {
    const t = await start((exports) => exports.create('vol', 1024 * 1024));
    const volume = t.exports.volume('vol');
    const { client } = await openExport(t.socketPath, 'vol');
    const release = volume.hold();
    client.write(request({ type: NBD_CMD_READ, handle: 8n, length: 4096 }));
    await vi.waitFor(() => expect(volume.inFlightOps).toBe(1));
    let closed = false;
    const closing = t.server.close().then(() => {
      closed = true;
    });
    expect(closed).toBe(false);
    release();
    expect(await readSimpleReply(client)).toEqual({ errno: 0, handle: 8n });
    await closing;
    expect(t.exports.openHandles).toBe(0);
    expect(t.server.connectionCount).toBe(0);
    expect((await client.read(4096)).length).toBe(4096);
    expect(await client.endsWithoutMoreData()).toBe(true);
  });

  it('ends connections that are still negotiating', async () => {
    const t = await start((exports) => exports.create('vol', 4096));
    const client = await RawClient.connect(t.socketPath);
    await greet(client);
    await t.server.close();
    await client.closed;
    expect(t.server.connectionCount).toBe(0);
  });

  it('removes the socket file', async () => {
    const t = await start(() => {});
    await t.server.close();
    await expect(fs.lstat(t.socketPath)).rejects.toThrow();
  });
});
