/**
 * Export names become file names under the state directory (NAME.json, fuse-NAME/) and part of
 * an NBD URI, so only names that are safe in both are accepted: the engine's own volume-name
 * alphabet (CLI.md), with upper case allowed. No '/', no leading '.', no '..'.
 */
import { quoteName } from '../../engine/names.ts';
import { AttachError } from './errors.ts';

const EXPORT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function checkExportName(exportName: string): void {
  if (!EXPORT_NAME.test(exportName)) {
    throw new AttachError('INVALID_ARGUMENT', `export name ${quoteName(exportName)} must match ${EXPORT_NAME.source}`);
  }
}

/**
 * `nbd+unix:///NAME?socket=PATH` (the NBD URI standard). libnbd unescapes both the export name
 * and the socket value, so each is percent-encoded: a socket path may hold spaces, '&' or '#'.
 */
export function nbdUnixUri(exportName: string, socketPath: string): string {
  const socket = socketPath.split('/').map(encodeURIComponent).join('/');
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`;
}
