/**
 * The attach state of one export: `STATE_DIR/NAME.json`, a small JSON object replaced
 * atomically (write a temporary file, fsync, rename over, fsync the directory), so a crash
 * leaves either the old record or the new one, never a torn one.
 *
 * The record says what we set up; it is never trusted on its own. Attachers check it against
 * the live system (loop devices, mounts, processes) before they act on it.
 */
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { removeDurably, writeJsonDurably } from '../durable-json.ts';
import { AttachError } from './errors.ts';

/** Bumped when a field changes meaning; a reader refuses versions it does not know. */
export const STATE_VERSION = 1;

export interface NbdfuseState {
  version: typeof STATE_VERSION;
  kind: 'nbdfuse';
  exportName: string;
  socketPath: string;
  /** The FUSE mount point; the export is the file `nbd` inside it. */
  mountDir: string;
  /** nbdfuse's process id (checked against /proc before use: ids are reused). */
  pid: number;
  /** /dev/loopN, or null between starting nbdfuse and binding the loop device. */
  loopDevice: string | null;
}

export interface NbdState {
  version: typeof STATE_VERSION;
  kind: 'nbd';
  exportName: string;
  socketPath: string;
  /** /dev/nbdN. */
  devicePath: string;
}

export interface FuseState {
  version: typeof STATE_VERSION;
  kind: 'fuse';
  exportName: string;
  socketPath: string;
  /** The FUSE mount point of braid-fuse; the export is the file `disk` inside it. */
  mountDir: string;
  /** braid-fuse's control socket. */
  controlSocket: string;
  /** braid-fuse's process id (checked against /proc before use: ids are reused). */
  pid: number;
  /** /dev/loopN, or null between starting braid-fuse and binding the loop device. */
  loopDevice: string | null;
}

export type AttachState = NbdfuseState | NbdState | FuseState;

export function statePath(stateDir: string, exportName: string): string {
  return join(stateDir, `${exportName}.json`);
}

/** The record of `exportName`, or undefined when there is none. */
export async function readState(stateDir: string, exportName: string): Promise<AttachState | undefined> {
  const path = statePath(stateDir, exportName);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new AttachError('STATE_CORRUPT', `${path} is not JSON`, { cause: err });
  }
  const state = asState(parsed);
  if (!state || state.exportName !== exportName) {
    throw new AttachError('STATE_CORRUPT', `${path} is not a version ${STATE_VERSION} attach record of ${JSON.stringify(exportName)}`);
  }
  return state;
}

/** Writes the record atomically, creating the state directory (mode 0700) if needed. */
export async function writeState(stateDir: string, state: AttachState): Promise<void> {
  await writeJsonDurably(stateDir, basename(statePath(stateDir, state.exportName)), state);
}

/** Removes the record; a missing one (or a missing state directory) is fine. */
export async function removeState(stateDir: string, exportName: string): Promise<void> {
  await removeDurably(stateDir, basename(statePath(stateDir, exportName)));
}

/** The parsed object as a state record, or undefined if any field is missing or mistyped. */
export function asState(value: unknown): AttachState | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (v['version'] !== STATE_VERSION || typeof v['exportName'] !== 'string' || typeof v['socketPath'] !== 'string') return undefined;
  const common = { version: STATE_VERSION, exportName: v['exportName'], socketPath: v['socketPath'] } as const;
  if (v['kind'] === 'nbdfuse') {
    const loop = v['loopDevice'];
    if (typeof v['mountDir'] !== 'string' || !Number.isSafeInteger(v['pid']) || (loop !== null && typeof loop !== 'string')) return undefined;
    return { ...common, kind: 'nbdfuse', mountDir: v['mountDir'], pid: v['pid'] as number, loopDevice: loop };
  }
  if (v['kind'] === 'fuse') {
    const loop = v['loopDevice'];
    if (typeof v['mountDir'] !== 'string' || typeof v['controlSocket'] !== 'string' || !Number.isSafeInteger(v['pid'])) return undefined;
    if (loop !== null && typeof loop !== 'string') return undefined;
    return { ...common, kind: 'fuse', mountDir: v['mountDir'], controlSocket: v['controlSocket'], pid: v['pid'] as number, loopDevice: loop };
  }
  if (v['kind'] === 'nbd') {
    if (typeof v['devicePath'] !== 'string') return undefined;
    return { ...common, kind: 'nbd', devicePath: v['devicePath'] };
  }
  return undefined;
}
