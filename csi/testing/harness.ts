/**
 * The CSI conformance harness: a real CSI server (csi/server.ts) with the Identity and
 * Controller services and the local backend, over a unix socket in a temp directory, and a
 * grpc-js client generated from OUR csi.proto. Behind the backend sits either a REAL engine
 * daemon (engine/daemon.ts, in the same temp directory: the tests' only engine-internal import)
 * or the in-memory FakeEngine, for what the engine API does not report or cannot be made to do
 * on demand.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { startEngineDaemon, type EngineDaemon } from '../../engine/daemon.ts';
import { MemoryLogger } from '../../test/fixtures/memory-logger.ts';
import { LocalBackend } from '../backend/local.ts';
import { ControllerService } from '../controller.ts';
import { IdentityService } from '../identity.ts';
import { startLocalCsi } from '../local-mode.ts';
import { csiPackageDefinition } from '../proto.ts';
import { startCsiServer, type CsiServer } from '../server.ts';
import { statusName } from '../status.ts';
import { FakeEngine } from './fake-engine.ts';

export const TEST_NODE_ID = 'test-node';

export type EngineKind = 'real' | 'fake';

export interface HarnessOptions {
  engine: EngineKind;
  /** Pool capacity of the real engine (bytes); unlimited by default. */
  capacityBytes?: number;
}

export interface CsiHarness {
  dir: string;
  csiSocketPath: string;
  logger: MemoryLogger;
  /** Set for engine 'fake'. */
  fake: FakeEngine | undefined;
  /** Set for engine 'real'. */
  daemon: EngineDaemon | undefined;
  identity: (method: string, request?: object) => Promise<Record<string, unknown>>;
  controller: (method: string, request?: object) => Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

type Client = grpc.Client & Record<string, unknown>;

export async function startCsiHarness(opts: HarnessOptions): Promise<CsiHarness> {
  const dir = await mkdtemp(join(tmpdir(), 'braid-csi-'));
  const logger = new MemoryLogger();
  const started = opts.engine === 'real' ? await startReal(opts, dir, logger) : await startFake(dir, logger);
  const identityClient = newClient('Identity', started.server.socketPath);
  const controllerClient = newClient('Controller', started.server.socketPath);
  return {
    dir,
    csiSocketPath: started.server.socketPath,
    logger,
    fake: started.fake,
    daemon: started.daemon,
    identity: (method, request = {}) => unary(identityClient, method, request),
    controller: (method, request = {}) => unary(controllerClient, method, request),
    async close() {
      identityClient.close();
      controllerClient.close();
      await started.close();
      await started.daemon?.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

interface Started {
  server: CsiServer;
  fake: FakeEngine | undefined;
  daemon: EngineDaemon | undefined;
  close(): Promise<void>;
}

/** Local mode exactly as `braid serve` runs it: engine daemon in DIR, then startLocalCsi. */
async function startReal(opts: HarnessOptions, dir: string, logger: MemoryLogger): Promise<Started> {
  const daemonOpts = { dir, logger: new MemoryLogger() };
  const daemon = await startEngineDaemon(opts.capacityBytes === undefined ? daemonOpts : { ...daemonOpts, capacityBytes: opts.capacityBytes });
  const local = await startLocalCsi({ dir, logger, nodeId: TEST_NODE_ID });
  return { server: local.server, fake: undefined, daemon, close: () => local.close() };
}

/** The same server and backend with the in-memory engine behind them. */
async function startFake(dir: string, logger: MemoryLogger): Promise<Started> {
  const fake = new FakeEngine();
  const backend = new LocalBackend({ engine: fake, nodeId: TEST_NODE_ID, poolDir: dir });
  const server = await startCsiServer({
    endpoint: `unix://${join(dir, 'csi.sock')}`,
    identity: new IdentityService({ probe: () => backend.probe() }),
    controller: new ControllerService({ backend }),
    logger,
  });
  return { server, fake, daemon: undefined, close: () => server.close() };
}

/** A client for one CSI service, from OUR csi.proto, the way a CO would build one. */
export function newClient(service: 'Identity' | 'Controller' | 'Node', socketPath: string): Client {
  const pkg = grpc.loadPackageDefinition(csiPackageDefinition) as unknown as { csi: { v1: Record<string, grpc.ServiceClientConstructor> } };
  const Ctor = pkg.csi.v1[service];
  if (Ctor === undefined) throw new Error(`no client for ${service}`);
  return new Ctor(`unix:${socketPath}`, grpc.credentials.createInsecure()) as Client;
}

/** One call; rejects with the grpc ServiceError (its `code` is the status). */
export function unary(client: Client, method: string, request: object): Promise<Record<string, unknown>> {
  const fn = client[method];
  if (typeof fn !== 'function') throw new Error(`no method ${method}`);
  return new Promise((resolve, reject) => {
    (fn as (req: object, cb: (err: grpc.ServiceError | null, res: Record<string, unknown>) => void) => void).call(client, request, (err, res) => {
      if (err) reject(err);
      else resolve(res);
    });
  });
}

/** The name of the status a call failed with (NOT_FOUND, ...); throws when it succeeded. */
export async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'number') return statusName(code);
    throw err;
  }
  throw new Error('expected the call to fail');
}
