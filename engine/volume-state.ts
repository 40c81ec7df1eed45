/**
 * A volume or a snapshot as clients see it: a name, a size, and a chain of layers read top
 * down. A volume writes into its top layer; a snapshot's top layer is frozen, so it is a
 * read-only view. Several volumes and snapshots may share frozen ancestors: that sharing is
 * what makes clones and snapshots cost metadata only.
 *
 *   clone "vm7"  ─▶ layer 12 ─┐
 *   volume "gold" ─▶ layer 9 ─┼─▶ layer 4 (frozen; also snapshot "gold-v1")
 *   clone "vm8"  ─▶ layer 13 ─┘
 */
import { SRC_HOLE, type BlockSource, type Layer } from './layer.ts';

export type ExportKind = 'volume' | 'snapshot';

export class VolumeState {
  readonly kind: ExportKind;
  readonly name: string;
  sizeBytes: number;
  readonly createdAtMs: number;
  top: Layer;
  /**
   * The layer this volume moves to once the metadata naming it is durable (while a snapshot or
   * clone of it is being published); pool.json already records it.
   */
  nextTop: Layer | undefined;
  /** For a snapshot, the volume it was taken of. */
  readonly sourceVolume: string;
  readonly dedup: boolean;
  /**
   * Dedup volumes match blocks only within their domain ('' is the pool's default domain), so
   * tenants given different domains cannot observe each other through dedup.
   */
  readonly dedupDomain: string;
  openHandles = 0;
  deleted = false;
  /** Result of the last resolve(): the source and, for DISK/MEMORY, the first block's pbn. */
  source: BlockSource = SRC_HOLE;
  pbn = 0;

  constructor(init: { kind: ExportKind; name: string; sizeBytes: number; createdAtMs: number; top: Layer; sourceVolume?: string; dedup?: boolean; dedupDomain?: string }) {
    this.kind = init.kind;
    this.name = init.name;
    this.sizeBytes = init.sizeBytes;
    this.createdAtMs = init.createdAtMs;
    this.top = init.top;
    this.sourceVolume = init.sourceVolume ?? '';
    this.dedup = init.dedup ?? false;
    this.dedupDomain = init.dedupDomain ?? '';
  }

  get readOnly(): boolean {
    return this.kind === 'snapshot';
  }

  /**
   * Resolves the run of blocks from lba (at most maxCount) through the layer chain: the first
   * layer that has the block decides; a run of holes in one layer is looked up in its parent
   * for the same (shorter) run.
   */
  resolve(lba: number, maxCount: number): number {
    let layer: Layer | undefined = this.top;
    let n = maxCount;
    while (layer) {
      n = layer.resolve(lba, n);
      if (layer.source !== SRC_HOLE || !layer.parent) {
        this.source = layer.source;
        this.pbn = layer.pbn;
        return n;
      }
      layer = layer.parent;
    }
    throw new Error('unreachable: the loop returns at the root layer');
  }
}
