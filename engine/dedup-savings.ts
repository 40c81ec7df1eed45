/**
 * Bytes inline dedup saves right now: over the layers that dedup-enabled volumes and snapshots
 * reach, the block references minus the distinct blocks they point at. Computed on demand (a
 * sort of every reference) and cached briefly: stats are read by people and scrapers, never on
 * the I/O path.
 *
 * Clones do not inflate it: a clone shares its source's blocks through the layer chain, where
 * each reference exists once. A layer made by flattening repeats its ancestors' references and
 * would count them as dedup savings while those ancestors live on; flattening is rare (chains
 * deeper than 8), so this is accepted and documented.
 */
import { LBA_LIMIT } from './index/block-map.ts';
import type { Layer } from './layer.ts';
import { isPbn } from './segment-usage.ts';
import type { VolumeState } from './volume-state.ts';

const CACHE_MS = 5000;

export class DedupSavings {
  #blocks = 0;
  #computedAtMs = -Infinity;

  savedBlocks(exports: Iterable<VolumeState>, nowMs = performance.now()): number {
    if (nowMs - this.#computedAtMs < CACHE_MS) return this.#blocks;
    this.#blocks = computeSavedBlocks(exports);
    this.#computedAtMs = nowMs;
    return this.#blocks;
  }
}

export function computeSavedBlocks(exports: Iterable<VolumeState>): number {
  const layers = new Set<Layer>();
  for (const e of exports) {
    if (!e.dedup) continue;
    for (let l: Layer | undefined = e.top; l; l = l.parent) layers.add(l);
  }
  let count = 0;
  for (const l of layers) count += l.index.mappedCount;
  const refs = new Uint32Array(count);
  let n = 0;
  for (const l of layers) {
    l.index.forEach(0, LBA_LIMIT, (_lba, v) => {
      if (isPbn(v) && n < refs.length) refs[n++] = v;
    });
  }
  const sorted = refs.subarray(0, n).sort();
  let distinct = 0;
  for (let i = 0; i < n; i++) if (i === 0 || sorted[i] !== sorted[i - 1]) distinct++;
  return n - distinct;
}
