/**
 * Getting a unix socket path ready for bind: a crash leaves the socket file behind, and bind()
 * fails with EADDRINUSE on it, so a stale file must go. "Stale" is proven, not assumed: we
 * connect first, and only a refused connection lets us unlink. A live listener (another engine
 * on the same directory) or a file that is not a socket is an error, never deleted.
 */
import { lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { resolve } from 'node:path';
import { EngineError } from './errors.ts';

/** The sockets of a pool directory (CLI.md): the daemon creates them, clients find them here. */
export const ENGINE_SOCKET_NAME = 'engine.sock';
export const NBD_SOCKET_NAME = 'nbd.sock';

export function poolSockets(dir: string): { engineSocketPath: string; nbdSocketPath: string } {
  return { engineSocketPath: resolve(dir, ENGINE_SOCKET_NAME), nbdSocketPath: resolve(dir, NBD_SOCKET_NAME) };
}

/** sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

export async function prepareSocketPath(socketPath: string): Promise<void> {
  const lengthBytes = Buffer.byteLength(socketPath);
  if (lengthBytes > MAX_SOCKET_PATH_BYTES) {
    throw new EngineError(
      'INVALID_ARGUMENT',
      `socket path ${socketPath} is ${lengthBytes} bytes, longer than the ${MAX_SOCKET_PATH_BYTES} a unix socket allows: use a shorter data directory`,
    );
  }
  let isSocket: boolean;
  try {
    isSocket = (await lstat(socketPath)).isSocket();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) {
    throw new EngineError('FAILED_PRECONDITION', `${socketPath} exists and is not a socket: refusing to replace it`);
  }
  if (await answers(socketPath)) {
    throw new EngineError('FAILED_PRECONDITION', `${socketPath} is in use by a running process`);
  }
  try {
    await unlink(socketPath);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
}

/** True when something accepts connections on the socket; false when it is stale. */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', (err) => {
      socket.destroy();
      const code = errnoCode(err);
      if (code === 'ECONNREFUSED' || code === 'ENOENT') resolve(false);
      else reject(err);
    });
  });
}

export function errnoCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  const code = (err as { code: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}
