/**
 * braid-fuse's control socket: how the attacher asks a running FUSE server what it is doing, and
 * tells it to look at the export's size again. A unix socket (mode 0600, in the attacher's 0700
 * state directory); one JSON request line, one JSON answer line, then the server closes.
 *
 *   {"op":"status"}  →  {"ok":true,"pid":…,"exportName":…,"state":"connected",…}
 *   {"op":"resize"}  →  {"ok":true,"sizeBytes":…,"previousBytes":…}  or  {"ok":false,"error":"…"}
 *
 * Why a socket rather than a signal: resize has an answer (the new size, or why it failed), and
 * status is a liveness check that does not touch the FUSE file (a read of the file would wait
 * while the engine restarts, and look like a hung server).
 */
import { chmod, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import type { LinkState } from './nbd-client.ts';

/** A request line larger than this is not ours. */
const MAX_REQUEST_BYTES = 4096;

export type ControlRequest = { op: 'status' } | { op: 'resize' };

export interface ServerStatus {
  pid: number;
  exportName: string;
  mountDir: string;
  state: LinkState;
  sizeBytes: number;
  replayBytes: number;
  replayEntries: number;
  inFlight: number;
  queued: number;
  reconnects: number;
}

export interface ResizeResult {
  sizeBytes: number;
  previousBytes: number;
}

export type ControlAnswer<T> = ({ ok: true } & T) | { ok: false; error: string };

export interface ControlHandlers {
  status(): ServerStatus;
  resize(): Promise<ResizeResult>;
}

/** Listens on `path` (replacing a stale socket file). */
export async function listenControl(path: string, handlers: ControlHandlers): Promise<Server> {
  await rm(path, { force: true });
  const server = createServer((socket) => serve(socket, handlers));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(path, 0o600);
  return server;
}

function serve(socket: Socket, handlers: ControlHandlers): void {
  let text = '';
  socket.setEncoding('utf8');
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: string) => {
    text += chunk;
    const newline = text.indexOf('\n');
    if (newline < 0) {
      if (text.length > MAX_REQUEST_BYTES) socket.destroy();
      return;
    }
    socket.removeAllListeners('data');
    void answer(text.slice(0, newline), handlers).then((reply) => socket.end(`${JSON.stringify(reply)}\n`));
  });
}

async function answer(line: string, handlers: ControlHandlers): Promise<ControlAnswer<object>> {
  let request: unknown;
  try {
    request = JSON.parse(line);
  } catch {
    return { ok: false, error: 'the request is not JSON' };
  }
  const op = (request as { op?: unknown } | null)?.op;
  try {
    if (op === 'status') return { ok: true, ...handlers.status() };
    if (op === 'resize') return { ok: true, ...(await handlers.resize()) };
    return { ok: false, error: `unknown op ${JSON.stringify(op)}` };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
}

/** One request to the server at `path`; rejects when nothing answers within `timeoutMs`. */
export function controlRequest<T extends object>(path: string, request: ControlRequest, timeoutMs: number): Promise<ControlAnswer<T>> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`braid-fuse did not answer on ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(text) as ControlAnswer<T>);
      } catch {
        reject(new Error(`braid-fuse answered ${JSON.stringify(text.slice(0, 200))} on ${path}`));
      }
    });
  });
}
