/**
 * The pool's small, rarely changing metadata: format version, identity, segment size, and the
 * tables of layers, volumes and snapshots. It lives in pool.json, rewritten atomically (and
 * durably) on every change, so whatever `create`, `snapshot` or `clone` acknowledged exists
 * after any crash. Layer ids are never reused: log records of a dropped layer are simply
 * skipped by recovery.
 */
import { EngineError } from './errors.ts';
import { writeFileAtomic, type Storage } from './storage/storage.ts';

export const META_FILE = 'pool.json';
export const POOL_FORMAT_VERSION = 1;

export interface LayerRecord {
  id: number;
  /** 0 for a root layer. Parents are listed before their children. */
  parentId: number;
  createdAtMs: number;
  /** Made by flattening: its map repeats block references of other layers (the cleaner checks it). */
  flattened?: boolean;
}

export interface ExportRecord {
  name: string;
  /** The top layer: writable for a volume, frozen for a snapshot. */
  layerId: number;
  sizeBytes: number;
  createdAtMs: number;
}

export interface VolumeRecord extends ExportRecord {
  dedup: boolean;
  /** Dedup domain; absent for the pool's default domain. */
  dedupDomain?: string;
}

export interface SnapshotRecord extends ExportRecord {
  sourceVolume: string;
  /** The source volume's dedup setting, inherited by clones of the snapshot. */
  dedup?: boolean;
  dedupDomain?: string;
}

export interface PoolMeta {
  formatVersion: number;
  poolId: number;
  segmentBytes: number;
  nextLayerId: number;
  layers: LayerRecord[];
  volumes: VolumeRecord[];
  snapshots: SnapshotRecord[];
}

export async function readPoolMeta(storage: Storage): Promise<PoolMeta | undefined> {
  const buf = await storage.readFile(META_FILE);
  if (!buf) return undefined;
  let meta: PoolMeta;
  try {
    meta = JSON.parse(buf.toString('utf8')) as PoolMeta;
  } catch (err) {
    throw new EngineError('CORRUPTION', `${META_FILE} is not valid JSON`, { cause: err });
  }
  if (typeof meta.formatVersion !== 'number' || meta.formatVersion > POOL_FORMAT_VERSION) {
    throw new EngineError(
      'UNSUPPORTED_FORMAT',
      `this pool has on-disk format version ${String(meta.formatVersion)}; this braid supports up to ${POOL_FORMAT_VERSION}: use a newer braid`,
    );
  }
  const tables = [meta.layers, meta.volumes, meta.snapshots];
  if (!tables.every(Array.isArray) || !Number.isInteger(meta.poolId) || !Number.isInteger(meta.segmentBytes)) {
    throw new EngineError('CORRUPTION', `${META_FILE} is missing required fields`);
  }
  return meta;
}

export async function writePoolMeta(storage: Storage, meta: PoolMeta): Promise<void> {
  await writeFileAtomic(storage, META_FILE, Buffer.from(`${JSON.stringify(meta, null, 2)}\n`));
}
