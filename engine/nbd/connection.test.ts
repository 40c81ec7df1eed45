import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryExportProvider } from '../../test/fixtures/memory-device.ts';
import { silentLogger } from '../logger.ts';
import { TransmissionConnection } from './connection.ts';
import { WriteBudget } from './write-budget.ts';
import { EngineError } from '../errors.ts';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
} from './protocol.ts';
import {
  openExport,
  RawClient,
  readSimpleReply,
  readStructuredChunk,
  request,
  startTestServer,
} from './test-support.ts';
import type { TestServer } from './test-support.ts';
import type { NbdLimits } from './server.ts';

const MiB = 1024 * 1024;
const VOLUME_BYTES = 16 * MiB;

let t: TestServer | null = null;

async function start(options: NbdLimits = {}): Promise<TestServer> {
  t = await startTestServer((exports) => {
    exports.create('vol', VOLUME_BYTES);
    exports.create('snap', MiB, { readOnly: true });
  }, options);
  return t;
}

afterEach(async () => {
  if (t === null) return;
  await t.stop();
  expect(t.exports.openHandles).toBe(0);
  t = null;
});

/** A READ that must succeed, returning its data (simple replies). */
async function readOk(client: RawClient, offset: number, length: number, handle = 77n): Promise<Buffer> {
  client.write(request({ type: NBD_CMD_READ, handle, offset, length }));
  expect(await readSimpleReply(client)).toEqual({ errno: 0, handle });
  return client.read(length);
}

async function errnoOf(client: RawClient, data: Buffer): Promise<number> {
  client.write(data);
  return (await readSimpleReply(client)).errno;
}

describe('simple replies', () => {
  it('writes and reads back, unaligned', async () => {
    const { socketPath, exports } = await start();
    const { client } = await openExport(socketPath, 'vol');
    const data = Buffer.alloc(3000, 0x11);
    client.write(request({ type: NBD_CMD_WRITE, handle: 1n, offset: 1000, payload: data }));
    expect(await readSimpleReply(client)).toEqual({ errno: 0, handle: 1n });
    expect(await readOk(client, 1000, 3000)).toEqual(data);
    expect(exports.volume('vol').peek(999, 1)[0]).toBe(0);
    client.destroy();
  });

  it('echoes the full 64-bit handle', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol');
    const handle = 0xfedcba9876543210n;
    client.write(request({ type: NBD_CMD_FLUSH, handle }));
    expect((await readSimpleReply(client)).handle).toBe(handle);
    client.destroy();
  });

  it('answers EINVAL to an out-of-range read and stays usable', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol');
    const read = request({ type: NBD_CMD_READ, handle: 1n, offset: VOLUME_BYTES - 512, length: 4096 });
    expect(await errnoOf(client, read)).toBe(NBD_EINVAL);
    expect((await readOk(client, 0, 4096)).length).toBe(4096);
    client.destroy();
  });

  it('answers EINVAL to a 64 MiB read and stays usable', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol');
    expect(await errnoOf(client, request({ type: NBD_CMD_READ, handle: 1n, length: 64 * MiB }))).toBe(NBD_EINVAL);
    expect((await readOk(client, 0, 4096)).length).toBe(4096);
    client.destroy();
  });

  it('answers EINVAL to a 64 MiB write after skipping its payload, and stays usable', async () => {
    const { socketPath, exports } = await start();
    const { client } = await openExport(socketPath, 'vol');
    client.write(request({ type: NBD_CMD_WRITE, handle: 1n, length: 64 * MiB }));
    const piece = Buffer.alloc(4 * MiB, 0x5a);
    for (let i = 0; i < 16; i++) client.write(piece);
    expect(await readSimpleReply(client)).toEqual({ errno: NBD_EINVAL, handle: 1n });
    expect(exports.volume('vol').allocatedBlocks).toBe(0);
    expect((await readOk(client, 0, 4096)).every((b) => b === 0)).toBe(true);
    client.destroy();
  });

  it('answers EINVAL to an offset at or beyond 2^53', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol');
    expect(await errnoOf(client, request({ type: NBD_CMD_READ, handle: 1n, offset: 1n << 53n, length: 1 }))).toBe(
      NBD_EINVAL,
    );
    client.destroy();
  });

  it('answers EINVAL to an unknown command', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol');
    expect(await errnoOf(client, request({ type: 99, handle: 1n }))).toBe(NBD_EINVAL);
    client.destroy();
  });

  it('answers EINVAL to a flag the command does not take', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol');
    const read = request({ type: NBD_CMD_READ, flags: NBD_CMD_FLAG_DF, handle: 1n, length: 512 });
    expect(await errnoOf(client, read)).toBe(NBD_EINVAL);
    const write = request({ type: NBD_CMD_WRITE, flags: NBD_CMD_FLAG_NO_HOLE, handle: 2n, payload: Buffer.alloc(512) });
    expect(await errnoOf(client, write)).toBe(NBD_EINVAL);
    client.destroy();
  });

  it('answers EPERM to a write on a read-only export', async () => {
    const { socketPath, exports } = await start();
    const { client } = await openExport(socketPath, 'snap');
    const write = request({ type: NBD_CMD_WRITE, handle: 1n, payload: Buffer.alloc(4096, 1) });
    expect(await errnoOf(client, write)).toBe(NBD_EPERM);
    expect(await errnoOf(client, request({ type: NBD_CMD_TRIM, handle: 2n, length: 4096 }))).toBe(NBD_EPERM);
    expect(exports.volume('snap').allocatedBlocks).toBe(0);
    client.destroy();
  });

  it('maps engine errors through errno.ts', async () => {
    const { socketPath, exports } = await start();
    const { client } = await openExport(socketPath, 'vol');
    exports.volume('vol').failNext(new EngineError('NO_SPACE', 'pool full'));
    expect(await errnoOf(client, request({ type: NBD_CMD_WRITE, handle: 1n, payload: Buffer.alloc(512) }))).toBe(
      NBD_ENOSPC,
    );
    exports.volume('vol').failNext(new EngineError('CORRUPTION', 'bad checksum'));
    expect(await errnoOf(client, request({ type: NBD_CMD_READ, handle: 2n, length: 512 }))).toBe(NBD_EIO);
    client.destroy();
  });

  it('answers EIO to an unexpected error and logs it', async () => {
    const { socketPath, exports, logger } = await start();
    const { client } = await openExport(socketPath, 'vol');
    exports.volume('vol').failNext(new TypeError('bug'));
    expect(await errnoOf(client, request({ type: NBD_CMD_FLUSH, handle: 1n }))).toBe(NBD_EIO);
    expect(logger.records.some((r) => r.level === 'error')).toBe(true);
    client.destroy();
  });
});

describe('durability flags', () => {
  it('passes FUA on writes to the device', async () => {
    const { socketPath, exports } = await start();
    const { client } = await openExport(socketPath, 'vol');
    const write = request({ type: NBD_CMD_WRITE, flags: NBD_CMD_FLAG_FUA, handle: 1n, payload: Buffer.alloc(4096, 7) });
    expect(await errnoOf(client, write)).toBe(0);
    expect(exports.volume('vol').fuaCount).toBe(1);
    client.destroy();
  });

  it('passes FLUSH to the device', async () => {
    const { socketPath, exports } = await start();
    const { client } = await openExport(socketPath, 'vol');
    expect(await errnoOf(client, request({ type: NBD_CMD_FLUSH, handle: 1n }))).toBe(0);
    expect(exports.volume('vol').flushCount).toBe(1);
    client.destroy();
  });
});

describe('trim and write zeroes', () => {
  it('trims to holes that read as zeros', async () => {
    const { socketPath, exports } = await start();
    const volume = exports.volume('vol');
    volume.poke(0, Buffer.alloc(16384, 9));
    const { client } = await openExport(socketPath, 'vol');
    expect(await errnoOf(client, request({ type: NBD_CMD_TRIM, handle: 1n, offset: 4096, length: 8192 }))).toBe(0);
    expect([0, 1, 2, 3].map((block) => volume.isHole(block))).toEqual([false, true, true, false]);
    expect((await readOk(client, 4096, 8192)).every((b) => b === 0)).toBe(true);
    client.destroy();
  });

  it('maps NO_HOLE to mayUnmap=false and accepts FAST_ZERO', async () => {
    const { socketPath, exports } = await start();
    const { client } = await openExport(socketPath, 'vol');
    const zero = (handle: bigint, flags: number) =>
      errnoOf(client, request({ type: NBD_CMD_WRITE_ZEROES, flags, handle, offset: 0, length: 8192 }));
    expect(await zero(1n, 0)).toBe(0);
    expect(await zero(2n, NBD_CMD_FLAG_NO_HOLE)).toBe(0);
    expect(await zero(3n, NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_FUA)).toBe(0);
    expect(exports.volume('vol').zeroCalls.map((c) => [c.mayUnmap, c.fua])).toEqual([
      [true, false],
      [false, false],
      [true, true],
    ]);
    client.destroy();
  });

  it('accepts a write-zeroes longer than the maximum request size (no payload)', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol');
    expect(await errnoOf(client, request({ type: NBD_CMD_WRITE_ZEROES, handle: 1n, length: VOLUME_BYTES }))).toBe(0);
    client.destroy();
  });
});

describe('structured replies', () => {
  it('answers READ with one OFFSET_DATA chunk marked done', async () => {
    const { socketPath, exports } = await start();
    exports.volume('vol').poke(8192, Buffer.alloc(4096, 0xcd));
    const { client } = await openExport(socketPath, 'vol', { structured: true });
    client.write(request({ type: NBD_CMD_READ, handle: 5n, offset: 8192, length: 4096 }));
    const chunk = await readStructuredChunk(client);
    expect(chunk).toMatchObject({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, handle: 5n });
    expect(Number(chunk.payload.readBigUInt64BE(0))).toBe(8192);
    expect(chunk.payload.subarray(8).equals(Buffer.alloc(4096, 0xcd))).toBe(true);
    client.destroy();
  });

  it('answers a failed READ with an ERROR chunk and a message', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol', { structured: true });
    client.write(request({ type: NBD_CMD_READ, handle: 6n, offset: VOLUME_BYTES, length: 512 }));
    const chunk = await readStructuredChunk(client);
    expect(chunk).toMatchObject({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_ERROR, handle: 6n });
    expect(chunk.payload.readUInt32BE(0)).toBe(NBD_EINVAL);
    const messageBytes = chunk.payload.readUInt16BE(4);
    expect(messageBytes).toBeGreaterThan(0);
    expect(chunk.payload.length).toBe(6 + messageBytes);
    client.destroy();
  });

  it('answers a zero-length READ with a NONE chunk', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol', { structured: true });
    client.write(request({ type: NBD_CMD_READ, handle: 7n, length: 0 }));
    expect(await readStructuredChunk(client)).toMatchObject({ type: NBD_REPLY_TYPE_NONE, flags: NBD_REPLY_FLAG_DONE });
    client.destroy();
  });
});

describe('BLOCK_STATUS', () => {
  async function blockStatus(client: RawClient, offset: number, length: number, flags = 0): Promise<number[][]> {
    client.write(request({ type: NBD_CMD_BLOCK_STATUS, flags, handle: 9n, offset, length }));
    const chunk = await readStructuredChunk(client);
    expect(chunk).toMatchObject({ type: NBD_REPLY_TYPE_BLOCK_STATUS, flags: NBD_REPLY_FLAG_DONE, handle: 9n });
    const extents: number[][] = [];
    for (let at = 4; at < chunk.payload.length; at += 8) {
      extents.push([chunk.payload.readUInt32BE(at), chunk.payload.readUInt32BE(at + 4)]);
    }
    return extents;
  }

  it('reports holes, data and allocated zeroes under the negotiated context id', async () => {
    const { socketPath, exports } = await start();
    const volume = exports.volume('vol');
    volume.poke(4096, Buffer.alloc(4096, 1));
    const opened = await openExport(socketPath, 'vol', { allocation: true });
    const { client } = opened;
    const zero = request({ type: NBD_CMD_WRITE_ZEROES, flags: NBD_CMD_FLAG_NO_HOLE, handle: 1n, offset: 8192, length: 4096 });
    expect(await errnoOf(client, zero)).toBe(0);
    client.write(request({ type: NBD_CMD_BLOCK_STATUS, handle: 9n, offset: 0, length: 16384 }));
    const chunk = await readStructuredChunk(client);
    expect(chunk.payload.readUInt32BE(0)).toBe(opened.allocationContextId);
    expect(await blockStatus(client, 0, 16384)).toEqual([
      [4096, NBD_STATE_HOLE | NBD_STATE_ZERO],
      [4096, 0],
      [4096, NBD_STATE_ZERO],
      [4096, NBD_STATE_HOLE | NBD_STATE_ZERO],
    ]);
    client.destroy();
  });

  it('answers REQ_ONE with exactly one extent', async () => {
    const { socketPath, exports } = await start();
    exports.volume('vol').poke(4096, Buffer.alloc(4096, 1));
    const { client } = await openExport(socketPath, 'vol', { allocation: true });
    const extents = await blockStatus(client, 0, 16384, NBD_CMD_FLAG_REQ_ONE);
    expect(extents).toEqual([[4096, NBD_STATE_HOLE | NBD_STATE_ZERO]]);
    client.destroy();
  });

  it('bounds the number of extents and never covers more than asked', async () => {
    const { socketPath, exports } = await start();
    const volume = exports.volume('vol');
    for (let block = 0; block < 4096; block += 2) volume.poke(block * 4096, Buffer.alloc(1, 1));
    const { client } = await openExport(socketPath, 'vol', { allocation: true });
    const extents = await blockStatus(client, 0, 4096 * 4096);
    expect(extents.length).toBeGreaterThan(1);
    expect(extents.length).toBeLessThanOrEqual(1024);
    expect(extents.reduce((sum, [length]) => sum + (length ?? 0), 0)).toBeLessThanOrEqual(4096 * 4096);
    client.destroy();
  });

  it('answers EINVAL when base:allocation was not negotiated', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol', { structured: true });
    client.write(request({ type: NBD_CMD_BLOCK_STATUS, handle: 3n, length: 4096 }));
    const chunk = await readStructuredChunk(client);
    expect(chunk.type).toBe(NBD_REPLY_TYPE_ERROR);
    expect(chunk.payload.readUInt32BE(0)).toBe(NBD_EINVAL);
    client.destroy();
  });

  it('answers an out-of-range query with an EINVAL chunk', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol', { allocation: true });
    client.write(request({ type: NBD_CMD_BLOCK_STATUS, handle: 3n, offset: VOLUME_BYTES, length: 4096 }));
    const chunk = await readStructuredChunk(client);
    expect(chunk.type).toBe(NBD_REPLY_TYPE_ERROR);
    expect(chunk.payload.readUInt32BE(0)).toBe(NBD_EINVAL);
    client.destroy();
  });
});

describe('stream handling', () => {
  it('parses headers and payloads split into single bytes', async () => {
    const { socketPath, exports } = await start();
    const { client } = await openExport(socketPath, 'vol');
    const payload = Buffer.alloc(64, 0x3c);
    const bytes = request({ type: NBD_CMD_WRITE, handle: 2n, offset: 100, payload });
    for (const byte of bytes) await client.writeAndFlush(Buffer.from([byte]));
    expect(await readSimpleReply(client)).toEqual({ errno: 0, handle: 2n });
    expect(exports.volume('vol').peek(100, 64).equals(payload)).toBe(true);
    client.destroy();
  });

  it('answers many pipelined requests sent in one write', async () => {
    const { socketPath } = await start();
    const { client } = await openExport(socketPath, 'vol');
    const requests: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const payload = Buffer.alloc(512, i & 0xff);
      requests.push(request({ type: NBD_CMD_WRITE, handle: BigInt(i), offset: i * 512, payload }));
    }
    client.write(Buffer.concat(requests));
    const handles = new Set<bigint>();
    for (let i = 0; i < 200; i++) {
      const reply = await readSimpleReply(client);
      expect(reply.errno).toBe(0);
      handles.add(reply.handle);
    }
    expect(handles.size).toBe(200);
    expect((await readOk(client, 199 * 512, 512)).every((b) => b === 199)).toBe(true);
    client.destroy();
  });

  it('never has more requests at the device than maxInFlightPerConnection', async () => {
    const { socketPath, exports } = await start({ maxInFlightPerConnection: 2 });
    const volume = exports.volume('vol');
    const { client } = await openExport(socketPath, 'vol');
    const release = volume.hold();
    const reads: Buffer[] = [];
    for (let i = 0; i < 10; i++) {
      reads.push(request({ type: NBD_CMD_READ, handle: BigInt(i), offset: i * 4096, length: 4096 }));
    }
    client.write(Buffer.concat(reads));
    await vi.waitFor(() => expect(volume.inFlightOps).toBe(2));
    release();
    for (let i = 0; i < 10; i++) {
      expect((await readSimpleReply(client)).errno).toBe(0);
      await client.read(4096);
    }
    expect(volume.peakInFlightOps).toBe(2);
    client.destroy();
  });
});

describe('write limits', () => {
  const LIMIT = 64 * 1024;

  it('refuses a WRITE beyond the end from its header, reserving nothing for the payload', async () => {
    const { socketPath, server, exports } = await start();
    const { client } = await openExport(socketPath, 'vol');
    await client.writeAndFlush(request({ type: NBD_CMD_WRITE, handle: 1n, offset: VOLUME_BYTES - 4096, length: MiB }));
    await client.writeAndFlush(Buffer.alloc(MiB / 2, 0x33));
    expect(server.inflightWriteBytes).toBe(0);
    client.write(Buffer.alloc(MiB / 2, 0x33));
    expect(await readSimpleReply(client)).toEqual({ errno: NBD_EINVAL, handle: 1n });
    expect(exports.volume('vol').allocatedBlocks).toBe(0);
    expect((await readOk(client, 0, 4096)).length).toBe(4096);
    client.destroy();
  });

  it('refuses a WRITE on a read-only export from its header and skips the payload', async () => {
    const { socketPath, server } = await start();
    const { client } = await openExport(socketPath, 'snap');
    await client.writeAndFlush(request({ type: NBD_CMD_WRITE, handle: 1n, length: 8192 }));
    expect(server.inflightWriteBytes).toBe(0);
    client.write(Buffer.alloc(8192));
    expect(await readSimpleReply(client)).toEqual({ errno: NBD_EPERM, handle: 1n });
    expect((await readOk(client, 0, 512)).length).toBe(512);
    client.destroy();
  });

  it('holds a WRITE in the budget from its header until it is answered', async () => {
    const { socketPath, server, exports } = await start();
    const volume = exports.volume('vol');
    const { client } = await openExport(socketPath, 'vol');
    await client.writeAndFlush(request({ type: NBD_CMD_WRITE, handle: 1n, length: 8192 }));
    await vi.waitFor(() => expect(server.inflightWriteBytes).toBe(8192));
    const release = volume.hold();
    client.write(Buffer.alloc(8192, 7));
    await vi.waitFor(() => expect(volume.inFlightOps).toBe(1));
    expect(server.inflightWriteBytes).toBe(8192);
    release();
    expect(await readSimpleReply(client)).toEqual({ errno: 0, handle: 1n });
    expect(server.inflightWriteBytes).toBe(0);
    client.destroy();
  });

  it('makes a WRITE wait, with its connection paused, until the budget has room', async () => {
    const { socketPath, server, exports } = await start({ maxRequestBytes: LIMIT, maxInflightWriteBytes: LIMIT });
    const volume = exports.volume('vol');
    const a = (await openExport(socketPath, 'vol')).client;
    const b = (await openExport(socketPath, 'vol')).client;
    // A takes the whole budget and sends only half its payload.
    await a.writeAndFlush(request({ type: NBD_CMD_WRITE, handle: 1n, length: LIMIT }));
    await a.writeAndFlush(Buffer.alloc(LIMIT / 2, 0xaa));
    await vi.waitFor(() => expect(server.inflightWriteBytes).toBe(LIMIT));
    // B's WRITE waits; the READ behind it is not even parsed (reading is paused, in order).
    const bWrite = request({ type: NBD_CMD_WRITE, handle: 2n, offset: LIMIT, payload: Buffer.alloc(4096, 0xbb) });
    await b.writeAndFlush(Buffer.concat([bWrite, request({ type: NBD_CMD_READ, handle: 3n, length: 512 })]));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(volume.peek(LIMIT, 1)[0]).toBe(0);
    expect(volume.inFlightOps).toBe(0);
    a.write(Buffer.alloc(LIMIT / 2, 0xaa));
    expect(await readSimpleReply(a)).toEqual({ errno: 0, handle: 1n });
    expect(await readSimpleReply(b)).toEqual({ errno: 0, handle: 2n });
    expect(await readSimpleReply(b)).toEqual({ errno: 0, handle: 3n });
    await b.read(512);
    expect(volume.peek(LIMIT, 4096).every((x) => x === 0xbb)).toBe(true);
    expect(server.inflightWriteBytes).toBe(0);
    a.destroy();
    b.destroy();
  });

  it('gives the budget back when a waiting or half-received WRITE is abandoned', async () => {
    const { socketPath, server } = await start({ maxRequestBytes: LIMIT, maxInflightWriteBytes: LIMIT });
    const a = (await openExport(socketPath, 'vol')).client;
    const b = (await openExport(socketPath, 'vol')).client;
    await a.writeAndFlush(request({ type: NBD_CMD_WRITE, handle: 1n, length: LIMIT }));
    await a.writeAndFlush(Buffer.alloc(100));
    await b.writeAndFlush(request({ type: NBD_CMD_WRITE, handle: 2n, length: LIMIT }));
    await vi.waitFor(() => expect(server.inflightWriteBytes).toBe(LIMIT));
    b.destroy();
    await vi.waitFor(() => expect(server.connectionCount).toBe(1));
    a.destroy();
    await vi.waitFor(() => expect(server.connectionCount).toBe(0));
    expect(server.inflightWriteBytes).toBe(0);
    // The budget is whole again: a full-size WRITE goes through.
    const c = (await openExport(socketPath, 'vol')).client;
    c.write(request({ type: NBD_CMD_WRITE, handle: 3n, payload: Buffer.alloc(LIMIT, 1) }));
    expect(await readSimpleReply(c)).toEqual({ errno: 0, handle: 3n });
    c.destroy();
  });

  it('drops a client stalled mid-payload once others wait for the budget, and only then', async () => {
    const stallMs = 100;
    const { socketPath, server } = await start({
      maxRequestBytes: LIMIT,
      maxInflightWriteBytes: LIMIT,
      payloadStallTimeoutMs: stallMs,
    });
    const staller = (await openExport(socketPath, 'vol')).client;
    await staller.writeAndFlush(request({ type: NBD_CMD_WRITE, handle: 1n, length: LIMIT }));
    await staller.writeAndFlush(Buffer.alloc(10));
    // Alone, it may take its time.
    await new Promise((resolve) => setTimeout(resolve, stallMs * 4));
    expect(server.connectionCount).toBe(1);
    const waiting = (await openExport(socketPath, 'vol')).client;
    waiting.write(request({ type: NBD_CMD_WRITE, handle: 2n, payload: Buffer.alloc(4096, 2) }));
    await staller.closed;
    expect(await readSimpleReply(waiting)).toEqual({ errno: 0, handle: 2n });
    waiting.destroy();
  });
});

describe('slow clients', () => {
  it('stops reading from a client that does not read its replies, and serves it once it does', async () => {
    const { socketPath, exports } = await start();
    const volume = exports.volume('vol');
    const { client } = await openExport(socketPath, 'vol');
    client.socket.pause();
    const count = 50_000;
    const flushes: Buffer[] = [];
    for (let i = 0; i < count; i++) flushes.push(request({ type: NBD_CMD_FLUSH, handle: BigInt(i) }));
    client.write(Buffer.concat(flushes));
    // Wait until the server has stopped making progress.
    let seen = -1;
    while (volume.flushCount !== seen) {
      seen = volume.flushCount;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    console.log(`flushes served before the client read anything: ${seen} of ${count}`);
    expect(seen).toBeLessThan(count / 2);
    client.socket.resume();
    for (let i = 0; i < count; i++) expect((await readSimpleReply(client)).errno).toBe(0);
    expect(volume.flushCount).toBe(count);
    client.destroy();
  });
});

describe('connection isolation and teardown', () => {
  it('closes only the connection that sends a bad request magic', async () => {
    const { socketPath, server } = await start();
    const good = (await openExport(socketPath, 'vol')).client;
    const bad = (await openExport(socketPath, 'vol')).client;
    const garbage = request({ type: NBD_CMD_READ, handle: 1n, length: 512 });
    garbage.writeUInt32BE(0xdeadbeef, 0);
    bad.write(garbage);
    expect(await bad.endsWithoutMoreData()).toBe(true);
    await vi.waitFor(() => expect(server.connectionCount).toBe(1));
    expect((await readOk(good, 0, 512)).length).toBe(512);
    good.destroy();
  });

  it('closes only the connection that sends garbage bytes', async () => {
    const { socketPath } = await start();
    const good = (await openExport(socketPath, 'vol')).client;
    const bad = (await openExport(socketPath, 'vol')).client;
    bad.write(Buffer.from('this is not an NBD request at all, just text'));
    await bad.closed;
    expect((await readOk(good, 0, 512)).length).toBe(512);
    good.destroy();
  });

  it('survives a client leaving in the middle of a write payload', async () => {
    const { socketPath, exports, server } = await start();
    const { client } = await openExport(socketPath, 'vol');
    await client.writeAndFlush(request({ type: NBD_CMD_WRITE, handle: 1n, length: MiB }));
    await client.writeAndFlush(Buffer.alloc(100 * 1024, 1));
    client.destroy();
    await vi.waitFor(() => expect(server.connectionCount).toBe(0));
    expect(exports.openHandles).toBe(0);
    expect(exports.volume('vol').allocatedBlocks).toBe(0);
    const other = (await openExport(socketPath, 'vol')).client;
    expect((await readOk(other, 0, 512)).length).toBe(512);
    other.destroy();
  });

  it('releases the device only after a request in flight at disconnect finishes', async () => {
    const { socketPath, exports, server } = await start();
    const volume = exports.volume('vol');
    const { client } = await openExport(socketPath, 'vol');
    const release = volume.hold();
    client.write(request({ type: NBD_CMD_READ, handle: 1n, length: 4096 }));
    await vi.waitFor(() => expect(volume.inFlightOps).toBe(1));
    client.destroy();
    await client.closed;
    expect(exports.openHandles).toBe(1);
    release();
    await vi.waitFor(() => expect(server.connectionCount).toBe(0));
    expect(exports.openHandles).toBe(0);
  });

  it('finishes in-flight requests on DISC, then closes', async () => {
    const { socketPath, exports } = await start();
    const volume = exports.volume('vol');
    const { client } = await openExport(socketPath, 'vol');
    const release = volume.hold();
    client.write(request({ type: NBD_CMD_READ, handle: 4n, length: 4096 }));
    await vi.waitFor(() => expect(volume.inFlightOps).toBe(1));
    client.write(request({ type: NBD_CMD_DISC, handle: 5n }));
    release();
    expect(await readSimpleReply(client)).toEqual({ errno: 0, handle: 4n });
    await client.read(4096);
    expect(await client.endsWithoutMoreData()).toBe(true);
    await vi.waitFor(() => expect(exports.openHandles).toBe(0));
  });
});

/**
 * Just enough of a net.Socket to drive TransmissionConnection with chunk boundaries we choose;
 * over a real socket the kernel decides where chunks break.
 */
class FakeSocket extends EventEmitter {
  readonly written: Buffer[] = [];
  destroyed = false;
  writable = true;
  readableEnded = false;
  writableLength = 0;
  writableNeedDrain = false;

  write(data: Buffer): boolean {
    this.written.push(Buffer.from(data));
    this.emit('written');
    return true;
  }

  /** Resolves once `count` replies have been written. */
  async replies(count: number): Promise<Buffer[]> {
    while (this.written.length < count) await new Promise((resolve) => this.once('written', resolve));
    return this.written;
  }

  pause(): this {
    return this;
  }

  resume(): this {
    return this;
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.writable = false;
    process.nextTick(() => this.emit('close'));
  }

  destroySoon(): void {
    this.destroy();
  }
}

describe('parser, fed exact chunks', () => {
  interface Fed {
    socket: FakeSocket;
    exports: MemoryExportProvider;
    connection: TransmissionConnection;
  }

  function feed(chunks: Buffer[]): Fed {
    const exports = new MemoryExportProvider();
    exports.create('vol', MiB);
    const socket = new FakeSocket();
    const device = exports.openExport('vol');
    const negotiated = { name: 'vol', device, structuredReplies: false, allocationContextId: 0 };
    const connection = new TransmissionConnection(socket as unknown as Socket, negotiated, [], {
      maxRequestBytes: 4096,
      maxInFlight: 8,
      writeBudget: new WriteBudget(4096),
      logger: silentLogger,
    });
    for (const chunk of chunks) socket.emit('data', chunk);
    return { socket, exports, connection };
  }

  // A WRITE with a payload, an over-long WRITE that must be skipped, and a FLUSH.
  const payload = Buffer.alloc(100, 0x42);
  const stream = Buffer.concat([
    request({ type: NBD_CMD_WRITE, handle: 1n, offset: 10, payload }),
    request({ type: NBD_CMD_WRITE, handle: 2n, payload: Buffer.alloc(5000, 0xee) }),
    request({ type: NBD_CMD_FLUSH, handle: 3n }),
  ]);

  async function expectAllAnswered(socket: FakeSocket, exports: MemoryExportProvider): Promise<void> {
    // Replies may come in any order; the refused WRITE is answered before the device finishes.
    const replies = (await socket.replies(3))
      .map((b) => [b.readBigUInt64BE(8), b.readUInt32BE(4)] as const)
      .sort((a, b) => Number(a[0] - b[0]));
    expect(replies).toEqual([
      [1n, 0],
      [2n, NBD_EINVAL],
      [3n, 0],
    ]);
    expect(exports.volume('vol').peek(10, 100).equals(payload)).toBe(true);
    expect(exports.volume('vol').flushCount).toBe(1);
  }

  it('handles the stream in one chunk', async () => {
    const { socket, exports } = feed([stream]);
    await expectAllAnswered(socket, exports);
  });

  it('handles the stream split in two at every byte boundary', async () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const { socket, exports } = feed([stream.subarray(0, cut), stream.subarray(cut)]);
      await expectAllAnswered(socket, exports);
    }
  });

  it('handles the stream one byte per chunk', async () => {
    const { socket, exports } = feed([...stream].map((byte) => Buffer.from([byte])));
    await expectAllAnswered(socket, exports);
  });

  it('closes the device once, after the socket closes', async () => {
    const { socket, exports, connection } = feed([request({ type: NBD_CMD_DISC, handle: 9n })]);
    await connection.finished;
    expect(socket.destroyed).toBe(true);
    expect(exports.openHandles).toBe(0);
  });
});
