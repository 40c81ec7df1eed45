import net from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import { MemoryExportProvider } from '../../test/fixtures/memory-device.ts';
import { NBD_OPT_LIST, NBD_REP_ACK, NBD_REP_SERVER } from './protocol.ts';
import { NbdServer } from './server.ts';
import { NbdTcpListener } from './tcp-listener.ts';
import { recordingLogger } from './test-support.ts';
import { StartTlsClient } from './tls-test-support.ts';

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

describe('NbdTcpListener', () => {
  it('reports the bound port, and on close stops accepting while open connections go on', async () => {
    const exports = new MemoryExportProvider();
    exports.create('vol', 4096);
    const logger = recordingLogger();
    const nbd = new NbdServer({ exports, logger });
    const listener = await NbdTcpListener.listen({ host: '127.0.0.1', port: 0, nbd, tls: null, logger });
    expect(listener.address).toMatch(/^127\.0\.0\.1:\d+$/);
    const port = Number(listener.address.split(':')[1]);
    expect(port).toBeGreaterThan(0);

    const client = await StartTlsClient.connect(port);
    await client.greet();
    await vi.waitFor(() => expect(nbd.connectionCount).toBe(1));
    await listener.close();
    expect(await refused(port)).toBe(true);

    // The connection belongs to the NbdServer and still answers.
    client.sendOption(NBD_OPT_LIST);
    expect((await client.readOptionReply()).type).toBe(NBD_REP_SERVER);
    expect((await client.readOptionReply()).type).toBe(NBD_REP_ACK);
    await nbd.close();
    await client.waitClosed();
    expect(nbd.connectionCount).toBe(0);
  });

  it('fails to listen on a port in use, with the system error', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    const logger = recordingLogger();
    const nbd = new NbdServer({ exports: new MemoryExportProvider(), logger });
    try {
      await expect(NbdTcpListener.listen({ host: '127.0.0.1', port, nbd, tls: null, logger })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    } finally {
      blocker.close();
      await nbd.close();
    }
  });
});
