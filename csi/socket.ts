/**
 * The CSI endpoint: a unix socket. Kubernetes passes it as `unix:///csi/csi.sock`; local mode
 * uses DIR/csi.sock. A crash leaves the socket file behind and bind() fails on it, so a stale
 * file must go, but "stale" is proven, not assumed: we connect first and unlink only when the
 * connection is refused. A live listener, or a file that is not a socket, is an error.
 * (engine/api/socket-path.ts does the same for the engine; csi/ may not import it.)
 */
import { lstat, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { status } from '@grpc/grpc-js';
import { CsiError } from './status.ts';

/** sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

/** The socket path of an endpoint written `unix:///abs/path`, `unix:/abs/path` or as a path. */
export function socketPathOf(endpoint: string): string {
  const path = endpoint.startsWith('unix://') ? endpoint.slice('unix://'.length) : endpoint.startsWith('unix:') ? endpoint.slice('unix:'.length) : endpoint;
  if (path === '') throw new CsiError(status.INVALID_ARGUMENT, `CSI endpoint ${JSON.stringify(endpoint)} names no socket path`);
  if (endpoint.startsWith('unix:') && !isAbsolute(path)) {
    throw new CsiError(status.INVALID_ARGUMENT, `CSI endpoint ${endpoint} must be an absolute path (unix:///path)`);
  }
  if (/^[a-z]+:/i.test(path)) throw new CsiError(status.INVALID_ARGUMENT, `CSI endpoint ${endpoint}: only unix sockets are supported`);
  return resolve(path);
}

export async function prepareSocketPath(socketPath: string): Promise<void> {
  const lengthBytes = Buffer.byteLength(socketPath);
  if (lengthBytes > MAX_SOCKET_PATH_BYTES) {
    throw new CsiError(status.INVALID_ARGUMENT, `socket path ${socketPath} is ${lengthBytes} bytes; a unix socket allows ${MAX_SOCKET_PATH_BYTES}`);
  }
  let isSocket: boolean;
  try {
    isSocket = (await lstat(socketPath)).isSocket();
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw new CsiError(status.FAILED_PRECONDITION, `${socketPath} exists and is not a socket: refusing to replace it`);
  if (await answers(socketPath)) throw new CsiError(status.FAILED_PRECONDITION, `${socketPath} is in use by a running process`);
  try {
    await unlink(socketPath);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
}

/** True when something accepts connections on the socket; false when it is stale. */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolvePromise, reject) => {
    const socket = connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolvePromise(true);
    });
    socket.once('error', (err) => {
      socket.destroy();
      const code = errnoCode(err);
      if (code === 'ECONNREFUSED' || code === 'ENOENT') resolvePromise(false);
      else reject(err);
    });
  });
}

function errnoCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  const code = (err as { code: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}
