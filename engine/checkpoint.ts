/**
 * Index checkpoints, so that a restart replays only the log written since the last one.
 * A checkpoint is the whole index as of one log position, after everything up to that
 * position was made durable; it is written to a temporary file, synced and renamed, so a crash
 * leaves the previous checkpoint intact. Layout (little-endian; docs/internals/log-format.md):
 *
 *   magic u32 | version u32 | poolId u32 | volumeCount u32
 *   position: segmentNo u32 | offsetInSegment u32 | nextSeq u32 lo | u32 hi
 *   volumeCount × ( volumeId u32 | mapBytes u32 lo | u32 hi | BlockMap image )
 *   crc32 u32 of everything before it
 */
import { crc32 } from 'node:zlib';
import { EngineError } from './errors.ts';
import { BlockMap } from './index/block-map.ts';
import type { LogPosition } from './log/log-writer.ts';
import type { Storage } from './storage/storage.ts';

export const CHECKPOINT_FILE = 'index.ckpt';
const MAGIC = 0x4b435242; // "BRCK"
const VERSION = 1;
const HEAD_BYTES = 32;

export interface Checkpoint {
  position: LogPosition;
  maps: Map<number, BlockMap>;
}

/** Serializes the maps now (synchronously, so it is a consistent cut) into file parts. */
export function encodeCheckpoint(poolId: number, position: LogPosition, maps: Map<number, BlockMap>): Buffer[] {
  const head = Buffer.alloc(HEAD_BYTES);
  head.writeUInt32LE(MAGIC, 0);
  head.writeUInt32LE(VERSION, 4);
  head.writeUInt32LE(poolId, 8);
  head.writeUInt32LE(maps.size, 12);
  head.writeUInt32LE(position.segmentNo, 16);
  head.writeUInt32LE(position.offsetInSegment, 20);
  head.writeUInt32LE(position.nextSeq % 2 ** 32, 24);
  head.writeUInt32LE(Math.floor(position.nextSeq / 2 ** 32), 28);
  const parts: Buffer[] = [head];
  for (const [volumeId, map] of maps) {
    const image = map.serialize();
    const prefix = Buffer.alloc(12);
    prefix.writeUInt32LE(volumeId, 0);
    prefix.writeUInt32LE(image.length % 2 ** 32, 4);
    prefix.writeUInt32LE(Math.floor(image.length / 2 ** 32), 8);
    parts.push(prefix, image);
  }
  let crc = 0;
  for (const p of parts) crc = crc32(p, crc);
  const tail = Buffer.alloc(4);
  tail.writeUInt32LE(crc, 0);
  parts.push(tail);
  return parts;
}

export async function writeCheckpoint(storage: Storage, parts: Buffer[]): Promise<void> {
  const tmp = `${CHECKPOINT_FILE}.tmp`;
  const file = await storage.open(tmp, { create: true });
  try {
    await file.truncate(0);
    let at = 0;
    for (const p of parts) {
      await file.write(p, 0, p.length, at);
      at += p.length;
    }
    await file.datasync();
  } finally {
    await file.close();
  }
  await storage.rename(tmp, CHECKPOINT_FILE);
  await storage.syncDir();
}

/** Returns undefined when there is no checkpoint; throws CORRUPTION when it is damaged. */
export async function readCheckpoint(storage: Storage, poolId: number): Promise<Checkpoint | undefined> {
  const buf = await storage.readFile(CHECKPOINT_FILE);
  if (!buf) return undefined;
  const corrupt = (why: string) => new EngineError('CORRUPTION', `index checkpoint ${CHECKPOINT_FILE} is damaged: ${why}`);
  if (buf.length < HEAD_BYTES + 4) throw corrupt('too short');
  if (crc32(buf.subarray(0, buf.length - 4)) !== buf.readUInt32LE(buf.length - 4)) throw corrupt('checksum mismatch');
  if (buf.readUInt32LE(0) !== MAGIC) throw corrupt('bad magic');
  if (buf.readUInt32LE(4) !== VERSION) {
    throw new EngineError('UNSUPPORTED_FORMAT', `index checkpoint version ${buf.readUInt32LE(4)} is not supported`);
  }
  if (buf.readUInt32LE(8) !== poolId) throw corrupt('it belongs to another pool');
  const position: LogPosition = {
    segmentNo: buf.readUInt32LE(16),
    offsetInSegment: buf.readUInt32LE(20),
    nextSeq: buf.readUInt32LE(28) * 2 ** 32 + buf.readUInt32LE(24),
  };
  const maps = new Map<number, BlockMap>();
  let at = HEAD_BYTES;
  for (let i = buf.readUInt32LE(12); i > 0; i--) {
    if (at + 12 > buf.length - 4) throw corrupt('truncated volume entry');
    const volumeId = buf.readUInt32LE(at);
    const length = buf.readUInt32LE(at + 8) * 2 ** 32 + buf.readUInt32LE(at + 4);
    at += 12;
    if (at + length > buf.length - 4) throw corrupt('truncated index image');
    maps.set(volumeId, BlockMap.deserialize(buf.subarray(at, at + length)));
    at += length;
  }
  return { position, maps };
}
