/**
 * The CSI endpoint: a unix socket. Kubernetes passes it as `unix:///csi/csi.sock`; local mode
 * uses DIR/csi.sock. A crash leaves the socket file behind and bind() fails on it, so a stale
 * file must go, but "stale" is proven, not assumed: we connect first and unlink only when the
 * connection is refused. A live listener, or a file that is not a socket, is an error.
 * The check itself is the engine API's (engine/api/socket-path.ts), shared by every socket.
 */
import { isAbsolute, resolve } from 'node:path';
import { status } from '@grpc/grpc-js';
import { CsiError } from './status.ts';

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

/** Removes a stale socket file (proven stale), refusing live listeners and non-sockets. */
export { prepareSocketPath } from '../engine/socket-path.ts';
