/**
 * How many blocks an export shows (mapped anywhere in its chain), for logical-bytes and
 * saved-by-clones figures. Frozen layers never change once their pending operations are
 * applied, so their counts are cached; a writable top costs O(its own mappings × depth).
 */
import { LBA_LIMIT, UNMAPPED } from './index/block-map.ts';
import type { Layer } from './layer.ts';

const frozenCounts = new WeakMap<Layer, number>();

export function countVisibleBlocks(top: Layer): number {
  const cacheable = top.frozen && !top.hasPending;
  const cached = cacheable ? frozenCounts.get(top) : undefined;
  if (cached !== undefined) return cached;
  let count = top.index.mappedCount;
  if (top.parent) {
    let shadowed = 0;
    const parent = top.parent;
    top.index.forEach(0, LBA_LIMIT, (lba) => {
      if (mappedInChain(parent, lba)) shadowed++;
    });
    count += countVisibleBlocks(parent) - shadowed;
  }
  if (cacheable) frozenCounts.set(top, count);
  return count;
}

function mappedInChain(layer: Layer, lba: number): boolean {
  for (let l: Layer | undefined = layer; l; l = l.parent) if (l.index.get(lba) !== UNMAPPED) return true;
  return false;
}
