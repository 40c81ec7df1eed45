/**
 * What the node plugin remembers about a staged volume, so that a restarted plugin (a fresh
 * process) can publish, measure, expand and unstage what an earlier one staged: one small JSON
 * record per volume in NODE_STATE/volumes/, replaced atomically (write, fsync, rename).
 *
 * The record holds what the CO told us at stage time (export, capability, staging path) and
 * the targets it was published at. It is a record of intent, never proof: the attacher's own
 * state plus the live system (loop devices, nbd devices, the mount table) are what the node
 * service checks before it changes anything.
 *
 * File names: a volume ID that is already a safe file name (every Braid volume ID is) is used
 * as is; any other ID the CO might send is hashed behind a '_', which no safe name starts with.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { removeDurably, writeJsonDurably } from './durable-json.ts';
import { join } from 'node:path';
import type { AccessType } from './volume-capability.ts';
import type { FsType } from './mount/filesystem.ts';

export const NODE_RECORD_VERSION = 1;

const SAFE_FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export interface PublishedTarget {
  targetPath: string;
  readOnly: boolean;
}

export interface StagedVolume {
  version: typeof NODE_RECORD_VERSION;
  volumeId: string;
  exportName: string;
  /** The engine's NBD socket the export is reached through. */
  socketPath: string;
  stagingPath: string;
  accessType: AccessType;
  /** The filesystem, for mount volumes; null for block. */
  fsType: FsType | null;
  mountFlags: string[];
  /** Staged for a read-only access mode: the filesystem is mounted ro, the block device set ro. */
  readOnly: boolean;
  /** The device of the last attach; null between recording the intent and attaching. */
  devicePath: string | null;
  published: PublishedTarget[];
}

export function recordFileName(volumeId: string): string {
  if (SAFE_FILE_NAME.test(volumeId)) return `${volumeId}.json`;
  return `_${createHash('sha256').update(volumeId).digest('hex')}.json`;
}

export class NodeState {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** The record of `volumeId`, or undefined when it was never staged here (or was unstaged). */
  async read(volumeId: string): Promise<StagedVolume | undefined> {
    const path = join(this.dir, recordFileName(volumeId));
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const record = asStagedVolume(JSON.parse(text));
    // Not ours, or a hash collision: a loud failure beats acting on another volume's record.
    if (record === undefined || record.volumeId !== volumeId) throw new Error(`${path} is not a node record of volume ${JSON.stringify(volumeId)}`);
    return record;
  }

  async write(record: StagedVolume): Promise<void> {
    await writeJsonDurably(this.dir, recordFileName(record.volumeId), record);
  }

  async remove(volumeId: string): Promise<void> {
    await removeDurably(this.dir, recordFileName(volumeId));
  }
}

/** The parsed JSON as a record, or undefined if any field is missing or mistyped. */
export function asStagedVolume(value: unknown): StagedVolume | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const strings = ['volumeId', 'exportName', 'socketPath', 'stagingPath'] as const;
  if (v['version'] !== NODE_RECORD_VERSION || strings.some((k) => typeof v[k] !== 'string')) return undefined;
  if (v['accessType'] !== 'block' && v['accessType'] !== 'mount') return undefined;
  if (v['fsType'] !== null && v['fsType'] !== 'ext4' && v['fsType'] !== 'xfs') return undefined;
  if (!isStringArray(v['mountFlags']) || typeof v['readOnly'] !== 'boolean') return undefined;
  if (v['devicePath'] !== null && typeof v['devicePath'] !== 'string') return undefined;
  const published = v['published'];
  if (!Array.isArray(published) || !published.every(isPublishedTarget)) return undefined;
  return value as StagedVolume;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((s) => typeof s === 'string');
}

function isPublishedTarget(value: unknown): value is PublishedTarget {
  if (typeof value !== 'object' || value === null) return false;
  const t = value as Record<string, unknown>;
  return typeof t['targetPath'] === 'string' && typeof t['readOnly'] === 'boolean';
}
