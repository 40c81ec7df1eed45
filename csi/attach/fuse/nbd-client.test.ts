/**
 * The NBD client against a fake server that caches writes until FLUSH and loses them on a
 * crash (fake-nbd-server.ts): pipelining, reconnect with replay of unflushed writes, re-sending
 * of in-flight requests after the replay, the reconnect timeout, and the replay bound.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NBD_CMD_FLUSH, NBD_CMD_WRITE } from '../../../engine/nbd/protocol.ts';
import { BlockIoError } from './block-backend.ts';
import { EIO } from './fuse-abi.ts';
import { FakeNbdServer } from './fake-nbd-server.ts';
import { NbdOptionRefusedError } from './nbd-handshake.ts';
import { NbdClient } from './nbd-client.ts';
import type { NbdClientOptions } from './nbd-client.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

let dir: string;
let server: FakeNbdServer;
const clients: NbdClient[] = [];
const logged: string[] = [];
const logger = { info: (_: object, m: string) => logged.push(m), warn: (_: object, m: string) => logged.push(m), error: (_: object, m: string) => logged.push(m) };

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-nbd-client-'));
  server = new FakeNbdServer(join(dir, 'nbd.sock'), 'vol', 8 * MiB);
  await server.start();
  logged.length = 0;
});

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

async function open(extra: Partial<NbdClientOptions> = {}): Promise<NbdClient> {
  const client = await NbdClient.open({ socketPath: server.path, exportName: 'vol', logger, ...extra });
  clients.push(client);
  return client;
}

function until(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const poll = (): void => {
      if (check()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(poll, 5);
    };
    poll();
  });
}

async function readBack(client: NbdClient, offset: number, length: number): Promise<Buffer> {
  const dest = Buffer.alloc(length);
  await client.read(offset, dest);
  return dest;
}

describe('NbdClient', () => {
  it('negotiates the size and flags, and pipelines reads, writes, zeroes and flushes', async () => {
    const client = await open();
    expect(client.sizeBytes).toBe(8 * MiB);
    expect(client.canWriteZeroes).toBe(true);
    expect(client.readOnly).toBe(false);
    const blocks = Array.from({ length: 32 }, () => randomBytes(4 * KiB));
    await Promise.all(blocks.map((b, i) => client.write(i * 4 * KiB, Buffer.from(b))));
    const back = await Promise.all(blocks.map((_, i) => readBack(client, i * 4 * KiB, 4 * KiB)));
    expect(back.every((b, i) => b.equals(blocks[i]!))).toBe(true);
    await client.writeZeroes(0, 8 * KiB);
    expect((await readBack(client, 0, 8 * KiB)).every((x) => x === 0)).toBe(true);
    expect(client.status().replayEntries).toBe(33);
    await client.flush();
    expect(client.status()).toMatchObject({ state: 'connected', replayEntries: 0, replayBytes: 0 });
    expect(server.durable.subarray(8 * KiB, 12 * KiB).equals(blocks[2]!)).toBe(true);
  });

  it('refuses an export the server does not have, at open', async () => {
    await expect(NbdClient.open({ socketPath: server.path, exportName: 'other', logger })).rejects.toBeInstanceOf(NbdOptionRefusedError);
  });

  it('reports a server error as the errno, and keeps nothing of the failed write', async () => {
    const client = await open();
    server.failWritesWith = 28;
    await expect(client.write(0, Buffer.alloc(4 * KiB, 1))).rejects.toMatchObject({ errno: 28 });
    server.failWritesWith = 0;
    await expect(client.write(16 * MiB, Buffer.alloc(4 * KiB, 1))).rejects.toMatchObject({ errno: 22 }); // past the end
    expect(client.status().replayEntries).toBe(0);
  });

  it('after a crash, replays acknowledged unflushed writes; fsynced data survives and the next flush makes the rest durable', async () => {
    const client = await open();
    const flushed = randomBytes(64 * KiB);
    const unflushed = randomBytes(64 * KiB);
    await client.write(0, Buffer.from(flushed));
    await client.flush();
    await client.write(MiB, Buffer.from(unflushed));
    await server.crash(); // the engine forgets the unflushed write
    expect(server.current.subarray(MiB, MiB + 64 * KiB).every((x) => x === 0)).toBe(true);
    await server.start();
    await client.flush(); // waits for the reconnect, which replays first
    expect(server.durable.subarray(0, 64 * KiB).equals(flushed)).toBe(true);
    expect(server.durable.subarray(MiB, MiB + 64 * KiB).equals(unflushed)).toBe(true);
    expect(client.status()).toMatchObject({ state: 'connected', reconnects: 1, replayEntries: 0 });
    expect(logged).toContain('replayed writes not yet flushed');
  });

  it('re-sends in-flight requests after the replay, so a newer write is never overwritten by an older one', async () => {
    const client = await open();
    await client.write(0, Buffer.alloc(4 * KiB, 0xaa)); // acknowledged, not flushed: will be replayed
    server.hold = true;
    const newer = client.write(0, Buffer.alloc(4 * KiB, 0xbb)); // in flight when the server dies
    const read = readBack(client, 0, 4 * KiB);
    await until('the server to hold the newer write', () => server.heldCount === 2);
    await server.crash();
    await server.start();
    await newer;
    expect((await read).every((x) => x === 0xbb || x === 0xaa)).toBe(true);
    expect((await readBack(client, 0, 4 * KiB)).every((x) => x === 0xbb)).toBe(true);
    // Before the crash 0xaa; after it, the replayed 0xaa first and the re-sent 0xbb after it.
    const writes = server.applied.filter(([command]) => command === NBD_CMD_WRITE).map((w) => w[3]);
    expect(writes).toEqual([0xaa, 0xaa, 0xbb]);
  });

  it('queues requests while disconnected and fails them with EIO after the reconnect timeout; recovers when the server is back', async () => {
    const client = await open({ reconnectTimeoutMs: 300 });
    await server.crash();
    const waiting = client.write(0, Buffer.alloc(4 * KiB, 1));
    await expect(waiting).rejects.toBeInstanceOf(BlockIoError);
    await expect(waiting).rejects.toMatchObject({ errno: EIO });
    expect(client.status().state).toBe('failed');
    await expect(client.flush()).rejects.toMatchObject({ errno: EIO }); // at once while failed
    await server.start();
    await until('the reconnect', () => client.status().state === 'connected');
    await client.write(0, Buffer.alloc(4 * KiB, 2));
    await client.flush();
    expect(server.durable[0]).toBe(2);
  });

  it('keeps the replay log under its bound by flushing on its own', async () => {
    const client = await open({ replayLimitBytes: 256 * KiB });
    let peak = 0;
    for (let i = 0; i < 64; i++) {
      await Promise.all([0, 1, 2, 3].map((j) => client.write((i * 4 + j) * 16 * KiB, Buffer.alloc(16 * KiB, i))));
      peak = Math.max(peak, client.status().replayBytes);
    }
    expect(server.count(NBD_CMD_FLUSH)).toBeGreaterThan(4);
    expect(peak).toBeLessThanOrEqual(256 * KiB);
    // What the client's own flushes covered is durable; the rest is still kept for a replay.
    await server.crash();
    await server.start();
    await client.flush();
    for (let i = 0; i < 64; i++) expect(server.durable[(i * 4 + 3) * 16 * KiB]).toBe(i);
  });

  it('reads the size again on a second connection, and learns it at a reconnect too', async () => {
    const sizes: number[] = [];
    const client = await open({ onSizeChange: (n) => sizes.push(n) });
    server.grow(12 * MiB);
    expect(await client.querySize()).toBe(12 * MiB);
    expect(client.sizeBytes).toBe(12 * MiB);
    server.grow(16 * MiB);
    await server.crash();
    await server.start();
    await client.flush();
    expect(client.sizeBytes).toBe(16 * MiB);
    expect(sizes).toEqual([12 * MiB, 16 * MiB]);
  });

  it('close() flushes, disconnects, and fails what comes after', async () => {
    const client = await open();
    await client.write(0, Buffer.alloc(4 * KiB, 7));
    await client.close();
    expect(server.durable[0]).toBe(7);
    await expect(client.read(0, Buffer.alloc(512))).rejects.toMatchObject({ errno: 108 });
  });
});
