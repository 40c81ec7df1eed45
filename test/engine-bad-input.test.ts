/**
 * Bad input never hurts anyone else: while a well-behaved client streams verified writes and
 * reads to volume "good", other connections send out-of-range and oversized requests, unknown
 * export names, garbage handshakes and half requests to volume "bad". Each gets the protocol's
 * answer (an errno, an option error, or a closed connection), the connection that got an errno
 * keeps working, and at the end the good client's data is exact and the daemon is alive.
 * The CLI's own error lines are checked at the end.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { BRAID_BIN, MiB, makeTempDir, qemuIo, run, seededRandom, useEngine } from './harness.ts';
import {
  ByteReader,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  CMD_WRITE_ZEROES,
  EINVAL,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  NbdClient,
  NbdOptionError,
  NbdRequestError,
  OPT_GO,
  REP_ACK,
  REP_ERR_UNKNOWN,
  REP_INFO,
  connectUnix,
  goData,
  optionBytes,
  readGreeting,
  readOptionReply,
  waitForClose,
} from './lib/nbd-client.ts';

const engine = useEngine();

const GOOD_SIZE = 64 * MiB;
const BAD_SIZE = 64 * MiB;

/** The request's errno (0 when it succeeded). */
async function errnoOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (err) {
    if (err instanceof NbdRequestError) return err.errno;
    throw err;
  }
}

/**
 * The well-behaved client: one request at a time, so its mirror of the volume is exact; reads
 * back random ranges it wrote and compares. Any error or mismatch is recorded.
 */
class GoodClient {
  readonly mirror = Buffer.alloc(GOOD_SIZE);
  readonly problems: string[] = [];
  ops = 0;
  private stopped = false;
  private loop: Promise<void> | null = null;
  private client: NbdClient | null = null;

  async start(socketPath: string): Promise<void> {
    this.client = await NbdClient.connect(socketPath, 'good');
    const client = this.client;
    const rand = seededRandom(12345);
    this.loop = (async () => {
      while (!this.stopped) {
        const length = 1 + Math.floor(rand() * 256 * 1024);
        const offset = Math.floor(rand() * (GOOD_SIZE - length));
        try {
          if (rand() < 0.6) {
            const data = randomBytes(length);
            await client.write(offset, data, rand() < 0.1);
            data.copy(this.mirror, offset);
            if (rand() < 0.2) await client.flush();
          } else {
            const got = await client.read(offset, length);
            if (!got.equals(this.mirror.subarray(offset, offset + length))) {
              this.problems.push(`read ${offset}+${length} differs from what was written`);
            }
          }
          this.ops++;
        } catch (err) {
          this.problems.push(`op ${this.ops}: ${err instanceof Error ? err.message : String(err)}`);
          return;
        }
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  /** Reads the whole volume on a fresh connection and compares it with the mirror. */
  async verifyAll(socketPath: string): Promise<void> {
    const c = await NbdClient.connect(socketPath, 'good');
    try {
      const all = await c.readAll(0, GOOD_SIZE, 4 * MiB);
      expect(all.equals(this.mirror), 'volume "good" differs from what its client wrote').toBe(true);
    } finally {
      await c.disconnect();
    }
  }

  async close(): Promise<void> {
    await this.client?.disconnect();
  }
}

/** Negotiates up to (and including) the greeting and client flags on a raw socket. */
async function rawHandshakeStart(socketPath: string): Promise<{ socket: Socket; reader: ByteReader }> {
  const socket = await connectUnix(socketPath);
  const reader = new ByteReader(socket);
  const serverFlags = await readGreeting(reader);
  expect(serverFlags & FLAG_FIXED_NEWSTYLE).toBe(FLAG_FIXED_NEWSTYLE);
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (serverFlags & FLAG_NO_ZEROES), 0);
  socket.write(flags);
  return { socket, reader };
}

describe('bad input on one volume while a good client works on another', () => {
  const good = new GoodClient();

  beforeAll(async () => {
    await engine().createVolume('good', '64M');
    await engine().createVolume('bad', '64M');
    await good.start(engine().nbdSocket);
  });

  afterAll(async () => {
    await good.stop();
    await good.close();
  });

  it('out-of-range reads, writes, trims and zeroes get EINVAL and change nothing; the connection lives on', async () => {
    const c = await NbdClient.connect(engine().nbdSocket, 'bad');
    try {
      expect(c.info.sizeBytes).toBe(BAD_SIZE);
      const block = Buffer.alloc(8192, 0xee);
      expect(await errnoOf(c.read(BAD_SIZE - 4096, 8192)), 'read across the end').toBe(EINVAL);
      expect(await errnoOf(c.read(BAD_SIZE, 1)), 'read at the end').toBe(EINVAL);
      expect(await errnoOf(c.read(2 ** 40, 4096)), 'read far beyond').toBe(EINVAL);
      expect(await errnoOf(c.request(CMD_READ, 2 ** 60, 512)), 'offset beyond 2^53').toBe(EINVAL);
      expect(await errnoOf(c.write(BAD_SIZE - 4096, block)), 'write across the end').toBe(EINVAL);
      expect(await errnoOf(c.write(BAD_SIZE - 1, Buffer.from([1, 2]))), 'write of 2 bytes at the last byte').toBe(EINVAL);
      expect(await errnoOf(c.write(2 ** 40, block)), 'write far beyond').toBe(EINVAL);
      expect(await errnoOf(c.request(CMD_TRIM, BAD_SIZE - 4096, 8192)), 'trim across the end').toBe(EINVAL);
      expect(await errnoOf(c.request(CMD_WRITE_ZEROES, BAD_SIZE, 4096)), 'write zeroes beyond the end').toBe(EINVAL);
      // A rejected write is rejected whole: the in-range part was not written.
      expect((await c.read(BAD_SIZE - 4096, 4096)).equals(Buffer.alloc(4096))).toBe(true);
      // Same connection, valid requests: still served, right up to the last byte.
      await c.write(BAD_SIZE - 4096, block.subarray(0, 4096));
      await c.write(BAD_SIZE - 1, Buffer.from([0x42]));
      await c.flush();
      const tail = await c.read(BAD_SIZE - 4096, 4096);
      expect(tail.subarray(0, 4095).equals(block.subarray(0, 4095))).toBe(true);
      expect(tail[4095]).toBe(0x42);
    } finally {
      await c.disconnect();
    }
  });

  it('64 MiB read and write requests get EINVAL and the same connection still works', async () => {
    const c = await NbdClient.connect(engine().nbdSocket, 'bad');
    try {
      if (c.info.blockSize) expect(c.info.blockSize.max).toBeLessThanOrEqual(32 * MiB);
      expect(await errnoOf(c.read(0, 64 * MiB)), '64 MiB read').toBe(EINVAL);
      const big = Buffer.alloc(64 * MiB, 0x6b);
      expect(await errnoOf(c.write(0, big)), '64 MiB write (payload sent in full)').toBe(EINVAL);
      expect(await errnoOf(c.write(0, big.subarray(0, 32 * MiB + 1))), '32 MiB + 1 write').toBe(EINVAL);
      // Nothing of the refused writes landed, and the stream is still in step.
      expect((await c.read(0, 4 * MiB)).equals(Buffer.alloc(4 * MiB))).toBe(true);
      // Exactly the maximum is fine.
      const max = randomBytes(32 * MiB);
      await c.write(0, max);
      expect((await c.read(0, 32 * MiB)).equals(max)).toBe(true);
      await c.flush();
    } finally {
      await c.disconnect();
    }
  });

  it('an unknown export name at NBD_OPT_GO gets NBD_REP_ERR_UNKNOWN, and negotiation can go on', async () => {
    let refused: unknown;
    try {
      const c = await NbdClient.connect(engine().nbdSocket, 'no-such-volume');
      await c.disconnect();
    } catch (err) {
      refused = err;
    }
    expect(refused).toBeInstanceOf(NbdOptionError);
    expect((refused as NbdOptionError).replyType).toBe(REP_ERR_UNKNOWN);

    // Fixed newstyle: after an error reply the client may send another option on the same socket.
    const { socket, reader } = await rawHandshakeStart(engine().nbdSocket);
    try {
      socket.write(optionBytes(OPT_GO, goData('missing-too')));
      const r1 = await readOptionReply(reader);
      expect(r1.option).toBe(OPT_GO);
      expect(r1.type).toBe(REP_ERR_UNKNOWN);
      socket.write(optionBytes(OPT_GO, goData('bad')));
      let sawExport = false;
      for (;;) {
        const r = await readOptionReply(reader);
        if (r.type === REP_INFO && r.data.readUInt16BE(0) === 0) {
          sawExport = true;
          expect(Number(r.data.readBigUInt64BE(2))).toBe(BAD_SIZE);
        }
        if (r.type !== REP_INFO) {
          expect(r.type).toBe(REP_ACK);
          break;
        }
      }
      expect(sawExport).toBe(true);
    } finally {
      socket.destroy();
    }
  });

  it('garbage handshakes and garbage requests close only their own connection', async () => {
    // Random bytes instead of client flags and options.
    for (let i = 0; i < 5; i++) {
      const socket = await connectUnix(engine().nbdSocket);
      const reader = new ByteReader(socket);
      await readGreeting(reader);
      socket.write(randomBytes(4096));
      expect(await waitForClose(socket, 20_000), 'connection closed after garbage').toBe(true);
      socket.destroy();
    }
    // Random bytes before even reading the greeting.
    {
      const socket = await connectUnix(engine().nbdSocket);
      socket.write(Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), randomBytes(1024)]));
      expect(await waitForClose(socket, 20_000)).toBe(true);
      socket.destroy();
    }
    // A valid option magic with an absurd option length.
    {
      const { socket } = await rawHandshakeStart(engine().nbdSocket);
      const h = optionBytes(OPT_GO, Buffer.alloc(0));
      h.writeUInt32BE(0xfffffff0, 12);
      socket.write(h);
      expect(await waitForClose(socket, 20_000)).toBe(true);
      socket.destroy();
    }
    // A good handshake, then garbage instead of a request header.
    {
      const c = await NbdClient.connect(engine().nbdSocket, 'bad');
      c.socket.write(randomBytes(1000));
      expect(await waitForClose(c.socket, 20_000)).toBe(true);
      c.destroy();
    }
    // Everyone else is fine.
    const c = await NbdClient.connect(engine().nbdSocket, 'bad');
    expect((await c.read(0, 4096)).length).toBe(4096);
    await c.disconnect();
    expect(good.problems).toEqual([]);
  });

  it('clients that disconnect mid-request break nothing, and a half-sent write is not applied', async () => {
    const region = 40 * MiB;
    {
      // Half a write payload, then gone.
      const c = await NbdClient.connect(engine().nbdSocket, 'bad');
      const h = Buffer.alloc(28);
      h.writeUInt32BE(0x25609513, 0);
      h.writeUInt16BE(CMD_WRITE, 6);
      h.writeBigUInt64BE(1n, 8);
      h.writeBigUInt64BE(BigInt(region), 16);
      h.writeUInt32BE(MiB, 24);
      c.socket.write(h);
      c.socket.write(Buffer.alloc(MiB / 2, 0x99));
      await new Promise<void>((r) => c.socket.end(() => r()));
      c.destroy();
    }
    {
      // Half a request header, then gone.
      const c = await NbdClient.connect(engine().nbdSocket, 'bad');
      const h = Buffer.alloc(28);
      h.writeUInt32BE(0x25609513, 0);
      c.socket.write(h.subarray(0, 11));
      c.destroy();
    }
    {
      // Many reads in flight, then gone without reading the replies.
      const c = await NbdClient.connect(engine().nbdSocket, 'bad');
      for (let i = 0; i < 64; i++) void c.read(0, MiB).catch(() => {});
      c.destroy();
    }
    {
      // Gone in the middle of the handshake.
      const { socket } = await rawHandshakeStart(engine().nbdSocket);
      socket.write(optionBytes(OPT_GO, goData('bad')).subarray(0, 10));
      socket.destroy();
    }
    const c = await NbdClient.connect(engine().nbdSocket, 'bad');
    try {
      expect((await c.read(region, MiB)).equals(Buffer.alloc(MiB)), 'the half-sent write left no trace').toBe(true);
      await c.write(region, Buffer.alloc(4096, 0x12));
      expect((await c.read(region, 4096)).equals(Buffer.alloc(4096, 0x12))).toBe(true);
    } finally {
      await c.disconnect();
    }
  });

  it('afterwards the good client saw no error, its data is exact, and the daemon is alive', async () => {
    await good.stop();
    expect(good.problems).toEqual([]);
    expect(good.ops, 'the good client did work during the abuse').toBeGreaterThan(10);
    await good.verifyAll(engine().nbdSocket);
    expect(await engine().exitedStatus()).toBeNull();
    const names = (await engine().listVolumes()).map((v) => v.name);
    expect(names).toEqual(['bad', 'good']);
    // A real client agrees too.
    await qemuIo(engine().uri('bad'), ['read -P 0x12 40M 4k']);
    // Bad input is the client's problem: nothing was logged as an internal error.
    expect(engine().errorLogLines()).toEqual([]);
  });
});

describe('CLI errors are one clear line', () => {
  function errorLines(stderr: string): string[] {
    return stderr.split('\n').filter((l) => l.length > 0);
  }

  it('a bad size is refused with one line', async () => {
    const r = await engine().cli(['volume', 'create', 'vm1', '--size', '12X']);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/^braid: .*12X/);
    expect((await engine().listVolumes()).map((v) => v.name)).not.toContain('vm1');
  });

  it('creating an existing volume says so', async () => {
    await engine().createVolume('vm1', '1G');
    const r = await engine().cli(['volume', 'create', 'vm1', '--size', '1G']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toBe('braid: volume "vm1" already exists\n');
  });

  it('removing a missing volume fails with a clear line', async () => {
    const r = await engine().cli(['volume', 'rm', 'no-such-vol']);
    expect(r.code).not.toBe(0);
    expect(errorLines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/^braid: .*no-such-vol/);
  });

  it('a bad volume name and a missing engine are one line each', async () => {
    const bad = await engine().cli(['volume', 'create', 'Bad_Name', '--size', '1M']);
    expect(bad.code).not.toBe(0);
    expect(errorLines(bad.stderr)).toHaveLength(1);
    expect(bad.stderr).toMatch(/^braid: /);
    const empty = await makeTempDir('braid-none-');
    const none = await run(BRAID_BIN, ['volume', 'ls', '--data', empty]);
    expect(none.code).not.toBe(0);
    expect(errorLines(none.stderr)).toHaveLength(1);
    expect(none.stderr).toMatch(/^braid: /);
  });
});
