/**
 * Does the engine serve this export, and how big is it? Asked over NBD, the one thing the node
 * plugin and the engine share (the volume context names the socket), with libnbd's nbdinfo.
 *
 * nbdinfo exits 1 for every failure, and its messages are not an interface, so a failure is
 * classified by asking two more questions rather than by reading text:
 *   - does anything accept connections on the socket? No: the engine is down (FAILED_PRECONDITION,
 *     the status.ts meaning of "engine not running");
 *   - does the export list (`nbdinfo --list --json`) name the export? No: it does not exist
 *     (undefined, which the node service answers NOT_FOUND). Yes: the failure was something
 *     else, and it is reported as it is.
 * The list is only read on this failure path: it opens every export, which is slow on a pool
 * with many volumes.
 */
import { connect } from 'node:net';
import { status } from '@grpc/grpc-js';
import { execTool } from './attach/exec.ts';
import type { Exec } from './attach/exec.ts';
import { exportSizeBytes } from './attach/export-size.ts';
import { nbdUnixUri } from './attach/export-name.ts';
import { CsiError } from './status.ts';

/** A healthy engine answers in milliseconds; this bounds a hung one. */
const NBDINFO_TIMEOUT_MS = 15_000;

/** The export's size in bytes, or undefined when the engine behind `socketPath` does not serve it. */
export async function exportSize(exportName: string, socketPath: string, exec: Exec = execTool): Promise<number | undefined> {
  try {
    return await exportSizeBytes(nbdUnixUri(exportName, socketPath), exec);
  } catch (err) {
    if (!(await acceptsConnections(socketPath))) {
      throw new CsiError(status.FAILED_PRECONDITION, `the engine is not running: nothing answers on ${socketPath}`, { cause: err });
    }
    const names = await exportNames(socketPath, exec);
    if (!names.includes(exportName)) return undefined;
    throw err;
  }
}

/** Parses `nbdinfo --list --json`: {"exports": [{"export-name": ...}, ...]}. */
export function parseExportList(stdout: string): string[] {
  const parsed = JSON.parse(stdout) as { exports?: { 'export-name'?: unknown }[] };
  return (parsed.exports ?? []).map((e) => e['export-name']).filter((n): n is string => typeof n === 'string');
}

async function exportNames(socketPath: string, exec: Exec): Promise<string[]> {
  const { stdout } = await exec('nbdinfo', ['--list', '--json', nbdUnixUri('', socketPath)], { timeoutMs: NBDINFO_TIMEOUT_MS });
  return parseExportList(stdout);
}

function acceptsConnections(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      socket.destroy();
      resolve(false);
    });
  });
}
