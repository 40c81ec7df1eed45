/**
 * The CSI server's own duties: the socket (stale file, live listener, endpoint forms), the one
 * wrapper (UNIMPLEMENTED for missing methods, error mapping, INTERNAL for the unexpected) and
 * its log lines (method, duration, status, secrets redacted).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EngineError } from '../engine/errors.ts';
import { MemoryLogger } from '../test/fixtures/memory-logger.ts';
import { LocalBackend } from './backend/local.ts';
import { ControllerService } from './controller.ts';
import { IdentityService } from './identity.ts';
import { startCsiServer, type CsiServer } from './server.ts';
import { socketPathOf } from './socket.ts';
import { CsiError } from './status.ts';
import { FakeEngine } from './testing/fake-engine.ts';
import { codeOf, newClient, startCsiHarness, unary } from './testing/harness.ts';
import { createVolumeRequest, mountCap } from './testing/requests.ts';

let dir: string;
let logger: MemoryLogger;
const servers: CsiServer[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-csi-server-'));
  logger = new MemoryLogger();
});

afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
  await rm(dir, { recursive: true, force: true });
});

const identity = new IdentityService({ probe: async () => undefined });

async function start(endpoint: string, extra: Partial<Parameters<typeof startCsiServer>[0]> = {}): Promise<CsiServer> {
  const server = await startCsiServer({ endpoint, identity, logger, ...extra });
  servers.push(server);
  return server;
}

async function call(socketPath: string, service: 'Identity' | 'Controller' | 'Node', method: string, request: object = {}) {
  const client = newClient(service, socketPath);
  try {
    return await unary(client, method, request);
  } finally {
    client.close();
  }
}

describe('socket', () => {
  it('listens on unix:///abs/path, unix:/abs/path and a plain path, mode 0600', async () => {
    for (const [i, form] of ['unix://', 'unix:', ''].entries()) {
      const path = join(dir, `csi-${i}.sock`);
      const server = await start(`${form}${path}`);
      expect(server.socketPath).toBe(path);
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect(await call(path, 'Identity', 'Probe')).toEqual({ ready: { value: true } });
    }
  });

  it('refuses endpoints that are not unix sockets', () => {
    expect(() => socketPathOf('tcp://127.0.0.1:1234')).toThrow(CsiError);
    expect(() => socketPathOf('unix://relative/path')).toThrow(CsiError);
    expect(() => socketPathOf('unix://')).toThrow(CsiError);
  });

  it('replaces a socket left stale by a crash', async () => {
    const path = join(dir, 'csi.sock');
    await leaveStaleSocket(path);
    await start(path);
    expect(await call(path, 'Identity', 'GetPluginInfo')).toMatchObject({ name: 'csi.braid.dev' });
  });

  it('does not take a live socket or replace a file that is not a socket', async () => {
    const path = join(dir, 'csi.sock');
    await start(path);
    await expect(start(path)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
    expect(await call(path, 'Identity', 'Probe')).toEqual({ ready: { value: true } });
    const file = join(dir, 'file.sock');
    await writeFile(file, 'data');
    await expect(start(file)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });

  it('removes its socket on close, and close is idempotent', async () => {
    const path = join(dir, 'csi.sock');
    const server = await start(path);
    await server.close();
    await server.close();
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('the wrapper', () => {
  it('answers UNIMPLEMENTED for a service method that is missing, and for an absent service', async () => {
    const path = join(dir, 'csi.sock');
    await start(path, { node: { nodeGetInfo: async () => ({ nodeId: 'n1' }) } });
    expect(await call(path, 'Node', 'NodeGetInfo')).toMatchObject({ nodeId: 'n1' });
    expect(await codeOf(call(path, 'Node', 'NodeStageVolume'))).toBe('UNIMPLEMENTED');
    expect(await codeOf(call(path, 'Controller', 'CreateVolume'))).toBe('UNIMPLEMENTED');
  });

  it('maps thrown errors once: CsiError as is, EngineError by code, anything else INTERNAL (logged with its error)', async () => {
    const path = join(dir, 'csi.sock');
    const node = {
      nodeStageVolume: async () => {
        throw new CsiError(status.FAILED_PRECONDITION, 'not staged');
      },
      nodePublishVolume: async () => {
        throw new EngineError('NO_SPACE', 'pool is full');
      },
      nodeUnpublishVolume: () => {
        throw new TypeError('synchronous bug');
      },
    };
    await start(path, { node });
    expect(await codeOf(call(path, 'Node', 'NodeStageVolume'))).toBe('FAILED_PRECONDITION');
    expect(await codeOf(call(path, 'Node', 'NodePublishVolume'))).toBe('RESOURCE_EXHAUSTED');
    expect(await codeOf(call(path, 'Node', 'NodeUnpublishVolume'))).toBe('INTERNAL');
    const internal = logger.entries.find((e) => e.level === 'error');
    expect(internal?.fields).toMatchObject({ method: 'NodeUnpublishVolume', code: 'INTERNAL' });
    expect(internal?.fields.err).toBeInstanceOf(TypeError);
    const refused = logger.entries.find((e) => e.fields.method === 'NodePublishVolume');
    expect(refused).toMatchObject({ level: 'warn', fields: { code: 'RESOURCE_EXHAUSTED', message: 'pool is full' } });
  });

  it('turns an unexpected backend failure into INTERNAL', async () => {
    const engine = new FakeEngine();
    engine.getVolume = async () => {
      throw new RangeError('unexpected');
    };
    const path = join(dir, 'csi.sock');
    const controller = new ControllerService({ backend: new LocalBackend({ engine, nodeId: 'n1', poolDir: dir }) });
    await start(path, { controller });
    expect(await codeOf(call(path, 'Controller', 'ControllerGetVolume', { volumeId: 'v1' }))).toBe('INTERNAL');
  });
});

describe('logging', () => {
  it('logs every call with method, duration and status, and never a secret', async () => {
    const h = await startCsiHarness({ engine: 'fake' });
    try {
      const request = createVolumeRequest('logged', {
        secrets: { password: 'hunter2-secret' },
        volumeCapabilities: [{ ...mountCap(), mount: { fsType: 'ext4', mountFlags: ['cred=hunter2-flag'] } }],
      });
      await h.controller('CreateVolume', request);
      await h.controller('DeleteVolume', { volumeId: 'logged', secrets: { token: 'hunter2-token' } });
      const text = JSON.stringify(h.logger.entries);
      expect(text).not.toContain('hunter2');
      const created = h.logger.entries.find((e) => e.fields.method === 'CreateVolume');
      expect(created).toMatchObject({ level: 'info', msg: 'CSI call', fields: { code: 'OK', request: { name: 'logged', secrets: '[redacted]' } } });
      expect(typeof created?.fields.durationMs).toBe('number');
      await h.identity('Probe');
      expect(h.logger.entries.find((e) => e.fields.method === 'Probe')?.level).toBe('debug');
    } finally {
      await h.close();
    }
  });
});

/** A socket file whose listener is gone, as a kill -9 leaves it. */
async function leaveStaleSocket(path: string): Promise<void> {
  const script = `require('node:net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`;
  const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
  await new Promise((resolve) => child.once('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve() : reject(err)));
    probe.listen(path, () => reject(new Error('stale socket was not left behind')));
  });
}
