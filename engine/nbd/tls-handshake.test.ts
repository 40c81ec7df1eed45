/**
 * NBD_OPT_STARTTLS end to end inside one process: an NbdServer with a TLS-only TCP listener
 * (TlsAcceptor + NbdTcpListener) and a hand-written client that switches to node:tls after
 * the ACK. What options get before and after TLS, who gets in, and that nothing a refused
 * client does reaches another connection. Certificates are made with `openssl` per run.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryExportProvider } from '../../test/fixtures/memory-device.ts';
import {
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_SERVER,
  NBD_SIMPLE_REPLY_MAGIC,
} from './protocol.ts';
import { NbdServer } from './server.ts';
import type { NbdLimits } from './server.ts';
import { NbdTcpListener } from './tcp-listener.ts';
import { infoRequest, recordingLogger, request } from './test-support.ts';
import { TlsAcceptor } from './tls-acceptor.ts';
import { loadTlsCredentials } from './tls-credentials.ts';
import type { TlsCredentials } from './tls-credentials.ts';
import { clientPem, makeTestPki, StartTlsClient } from './tls-test-support.ts';
import type { ClientPem, TestPki } from './tls-test-support.ts';

const VOLUME_BYTES = 1024 * 1024;
const TLS_FAILED = 'NBD TLS handshake failed; connection closed';

let tmp: string;
let pki: TestPki;
let credentials: TlsCredentials;
let good: ClientPem;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'braid-nbd-tls-'));
  pki = await makeTestPki(tmp);
  credentials = await loadTlsCredentials({ certFile: pki.serverCert, keyFile: pki.serverKey, caFile: pki.ca });
  good = await clientPem(pki.clientDirs.good);
});

afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

interface Harness {
  nbd: NbdServer;
  exports: MemoryExportProvider;
  acceptor: TlsAcceptor | null;
  port: number;
  logger: ReturnType<typeof recordingLogger>;
  stop(): Promise<void>;
}

async function startHarness(opts: { tls: boolean; limits?: NbdLimits }): Promise<Harness> {
  const exports = new MemoryExportProvider();
  exports.create('vol', VOLUME_BYTES);
  const logger = recordingLogger();
  const nbd = new NbdServer({ exports, logger, ...opts.limits });
  const acceptor = opts.tls ? new TlsAcceptor(credentials) : null;
  const listener = await NbdTcpListener.listen({ host: '127.0.0.1', port: 0, nbd, tls: acceptor, logger });
  const port = Number(listener.address.split(':').pop());
  return {
    nbd,
    exports,
    acceptor,
    port,
    logger,
    async stop() {
      await listener.close();
      await nbd.close();
    },
  };
}

function warnings(h: Harness, msg: string): unknown[] {
  return h.logger.records.filter((r) => r.level === 'warn' && r.msg === msg).map((r) => r.obj);
}

/** Connects, greets, sends STARTTLS and expects the ACK. */
async function connectAndAckTls(h: Harness): Promise<StartTlsClient> {
  const client = await StartTlsClient.connect(h.port);
  await client.greet();
  client.sendOption(NBD_OPT_STARTTLS);
  expect(await client.readOptionReply()).toMatchObject({ option: NBD_OPT_STARTTLS, type: NBD_REP_ACK });
  return client;
}

async function secureClient(h: Harness, pem: ClientPem = good): Promise<StartTlsClient> {
  const client = await connectAndAckTls(h);
  await client.startTls(pem);
  return client;
}

async function listExports(client: StartTlsClient): Promise<string[]> {
  client.sendOption(NBD_OPT_LIST);
  const names: string[] = [];
  for (;;) {
    const reply = await client.readOptionReply();
    if (reply.type === NBD_REP_ACK) return names;
    expect(reply.type).toBe(NBD_REP_SERVER);
    names.push(reply.data.subarray(4).toString('utf8'));
  }
}

/** Server's answer to a client that presents `pem`: 'in' when LIST works over TLS, else 'refused'. */
async function outcome(h: Harness, pem: ClientPem): Promise<'in' | 'refused'> {
  const client = await connectAndAckTls(h);
  try {
    await client.startTls(pem);
    return (await listExports(client)).includes('vol') ? 'in' : 'refused';
  } catch {
    // TLS 1.3: the client may think the handshake is done before the server refuses its
    // certificate; the refusal then shows as a closed connection on the next read.
    return 'refused';
  } finally {
    client.destroy();
    await client.waitClosed();
  }
}

describe('a TLS-only TCP listener', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await startHarness({ tls: true });
  });
  afterEach(async () => {
    await h.stop();
    expect(h.exports.openHandles).toBe(0);
    expect(h.acceptor?.pendingCount).toBe(0);
  });

  it('refuses every option but STARTTLS and ABORT before TLS, then ACKs ABORT', async () => {
    const client = await StartTlsClient.connect(h.port);
    await client.greet();
    for (const [code, data] of [
      [NBD_OPT_LIST, Buffer.alloc(0)],
      [NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0)],
      [NBD_OPT_INFO, infoRequest('vol')],
      [NBD_OPT_GO, infoRequest('vol')],
      [99, Buffer.alloc(3)],
    ] as const) {
      client.sendOption(code, data);
      const reply = await client.readOptionReply();
      expect(reply).toMatchObject({ option: code, type: NBD_REP_ERR_TLS_REQD });
      expect(reply.data.toString()).toMatch(/STARTTLS/);
    }
    client.sendOption(NBD_OPT_ABORT);
    expect(await client.readOptionReply()).toMatchObject({ option: NBD_OPT_ABORT, type: NBD_REP_ACK });
    await client.waitClosed();
    // One line per connection, not one per refused option.
    expect(h.logger.records.filter((r) => r.msg?.includes('without TLS on a TLS-only listener'))).toHaveLength(1);
  });

  it('closes the connection on NBD_OPT_EXPORT_NAME before TLS, without opening the export', async () => {
    const client = await StartTlsClient.connect(h.port);
    await client.greet();
    client.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from('vol'));
    await client.waitClosed();
    await expect(client.read(1)).rejects.toThrow(/ended/);
    expect(h.exports.openHandles).toBe(0);
  });

  it('hangs up on a client that does not speak fixed newstyle', async () => {
    const client = await StartTlsClient.connect(h.port);
    await client.greet(NBD_FLAG_C_NO_ZEROES);
    await client.waitClosed();
  });

  it('answers STARTTLS with data INVALID, then upgrades; inside TLS options work and STARTTLS is INVALID', async () => {
    const client = await StartTlsClient.connect(h.port);
    await client.greet();
    client.sendOption(NBD_OPT_STARTTLS, Buffer.from('x'));
    expect(await client.readOptionReply()).toMatchObject({ option: NBD_OPT_STARTTLS, type: NBD_REP_ERR_INVALID });
    client.sendOption(NBD_OPT_STARTTLS);
    expect(await client.readOptionReply()).toMatchObject({ type: NBD_REP_ACK });
    await client.startTls(good);

    expect(await listExports(client)).toEqual(['vol']);
    client.sendOption(NBD_OPT_STARTTLS);
    expect(await client.readOptionReply()).toMatchObject({ option: NBD_OPT_STARTTLS, type: NBD_REP_ERR_INVALID });
    client.sendOption(99);
    expect(await client.readOptionReply()).toMatchObject({ option: 99, type: NBD_REP_ERR_UNSUP });

    // Into transmission over TLS: a write, then a read of the same bytes.
    client.sendOption(NBD_OPT_GO, infoRequest('vol'));
    let reply = await client.readOptionReply();
    while (reply.type === NBD_REP_INFO) reply = await client.readOptionReply();
    expect(reply.type).toBe(NBD_REP_ACK);
    const data = Buffer.alloc(8192, 0x5a);
    client.write(request({ type: NBD_CMD_WRITE, handle: 1n, offset: 4096, payload: data }));
    const writeReply = await client.read(16);
    expect([writeReply.readUInt32BE(0), writeReply.readUInt32BE(4)]).toEqual([NBD_SIMPLE_REPLY_MAGIC, 0]);
    client.write(request({ type: NBD_CMD_READ, handle: 2n, offset: 4096, length: data.length }));
    const readReply = await client.read(16);
    expect(readReply.readUInt32BE(4)).toBe(0);
    expect((await client.read(data.length)).equals(data)).toBe(true);
    client.write(request({ type: NBD_CMD_DISC, handle: 3n }));
    await client.waitClosed();
    expect(warnings(h, TLS_FAILED)).toEqual([]);
  });

  it('does not carry STRUCTURED_REPLY refused before TLS into the TLS session', async () => {
    const client = await StartTlsClient.connect(h.port);
    await client.greet();
    client.sendOption(NBD_OPT_STRUCTURED_REPLY);
    expect((await client.readOptionReply()).type).toBe(NBD_REP_ERR_TLS_REQD);
    client.sendOption(NBD_OPT_STARTTLS);
    expect((await client.readOptionReply()).type).toBe(NBD_REP_ACK);
    await client.startTls(good);
    client.sendOption(NBD_OPT_GO, infoRequest('vol'));
    let reply = await client.readOptionReply();
    while (reply.type === NBD_REP_INFO) reply = await client.readOptionReply();
    // A READ gets a simple reply: structured replies were never agreed.
    client.write(request({ type: NBD_CMD_READ, handle: 7n, offset: 0, length: 512 }));
    expect((await client.read(16)).readUInt32BE(0)).toBe(NBD_SIMPLE_REPLY_MAGIC);
    client.destroy();
  });

  it('lets only a certificate signed by the CA in; refusals close just that connection, logged once', async () => {
    const noCert = await clientPem(pki.clientDirs.noCert);
    // A client that trusts our server but presents a certificate of another CA: the case a
    // standalone server-side TLSSocket would let through.
    const otherCa = await clientPem(pki.clientDirs.otherCa);
    const steady = await secureClient(h);

    expect(await outcome(h, noCert)).toBe('refused');
    expect(await outcome(h, otherCa)).toBe('refused');
    expect(await outcome(h, good)).toBe('in');

    // The connection opened before the refusals never noticed them.
    expect(await listExports(steady)).toEqual(['vol']);
    steady.destroy();
    const failures = warnings(h, TLS_FAILED) as { reason: string }[];
    expect(failures).toHaveLength(2);
    expect(failures[0]?.reason).toMatch(/no certificate/);
    expect(failures[1]?.reason).toMatch(/not signed by the trusted CA|refused/);
  });

  it('hangs up when the client sends bytes after STARTTLS before reading the ACK', async () => {
    const client = await StartTlsClient.connect(h.port);
    await client.greet();
    // STARTTLS and, in the same write, what would be a plaintext option smuggled in.
    const starttls = Buffer.alloc(16);
    starttls.writeBigUInt64BE(0x49484156454f5054n, 0);
    starttls.writeUInt32BE(NBD_OPT_STARTTLS, 8);
    const smuggled = Buffer.alloc(16);
    smuggled.writeBigUInt64BE(0x49484156454f5054n, 0);
    smuggled.writeUInt32BE(NBD_OPT_LIST, 8);
    client.write(Buffer.concat([starttls, smuggled]));
    await client.waitClosed();
    await expect(client.read(1)).rejects.toThrow(/ended/);
  });

  it('closes a connection that answers the ACK with plaintext instead of TLS', async () => {
    const client = await connectAndAckTls(h);
    client.sendOption(NBD_OPT_LIST);
    await client.waitClosed();
    expect(warnings(h, TLS_FAILED)).toHaveLength(1);
    expect(await outcome(h, good)).toBe('in');
  });
});

describe('TLS and the server limits', () => {
  it('counts TCP connections against maxConnections', async () => {
    const h = await startHarness({ tls: true, limits: { maxConnections: 1 } });
    try {
      const first = await secureClient(h);
      const second = await StartTlsClient.connect(h.port);
      await second.waitClosed();
      await expect(second.read(18)).rejects.toThrow(/ended/);
      expect(await listExports(first)).toEqual(['vol']);
      first.destroy();
    } finally {
      await h.stop();
    }
  });

  it('ends a client that never starts TLS after the ACK when the handshake time runs out', async () => {
    const h = await startHarness({ tls: true, limits: { handshakeTimeoutMs: 300 } });
    try {
      const client = await connectAndAckTls(h);
      await client.waitClosed();
      expect(h.logger.records.some((r) => r.msg?.includes('not finished in time'))).toBe(true);
      await vi.waitFor(() => expect(h.nbd.connectionCount).toBe(0));
      expect(h.acceptor?.pendingCount).toBe(0);
    } finally {
      await h.stop();
    }
  });

  it('closes TLS connections in transmission when the server closes', async () => {
    const h = await startHarness({ tls: true });
    const client = await secureClient(h);
    client.sendOption(NBD_OPT_GO, infoRequest('vol'));
    let reply = await client.readOptionReply();
    while (reply.type === NBD_REP_INFO) reply = await client.readOptionReply();
    expect(h.exports.openHandles).toBe(1);
    await h.stop();
    await client.waitClosed();
    expect(h.exports.openHandles).toBe(0);
    expect(h.nbd.connectionCount).toBe(0);
  });
});

describe('a TCP listener without TLS (--nbd-tcp-insecure)', () => {
  it('refuses STARTTLS with POLICY and serves plain options', async () => {
    const h = await startHarness({ tls: false });
    try {
      const client = await StartTlsClient.connect(h.port);
      await client.greet();
      client.sendOption(NBD_OPT_STARTTLS);
      expect(await client.readOptionReply()).toMatchObject({ option: NBD_OPT_STARTTLS, type: NBD_REP_ERR_POLICY });
      expect(await listExports(client)).toEqual(['vol']);
      client.destroy();
    } finally {
      await h.stop();
    }
  });
});
