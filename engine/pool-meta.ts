/**
 * The pool's small, rarely changing metadata: format version, identity, segment size and the
 * volume table. It lives in pool.json, rewritten atomically (and durably) on every change, so
 * a volume that `create` acknowledged exists after any crash. Volume ids are never reused:
 * log records of a deleted volume are then simply skipped by recovery.
 */
import { EngineError } from './errors.ts';
import { writeFileAtomic, type Storage } from './storage/storage.ts';

export const META_FILE = 'pool.json';
export const POOL_FORMAT_VERSION = 1;

export interface VolumeRecord {
  id: number;
  name: string;
  sizeBytes: number;
  createdAtMs: number;
}

export interface PoolMeta {
  formatVersion: number;
  poolId: number;
  segmentBytes: number;
  nextVolumeId: number;
  volumes: VolumeRecord[];
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
  if (!Array.isArray(meta.volumes) || !Number.isInteger(meta.poolId) || !Number.isInteger(meta.segmentBytes)) {
    throw new EngineError('CORRUPTION', `${META_FILE} is missing required fields`);
  }
  return meta;
}

export async function writePoolMeta(storage: Storage, meta: PoolMeta): Promise<void> {
  await writeFileAtomic(storage, META_FILE, Buffer.from(`${JSON.stringify(meta, null, 2)}\n`));
}
