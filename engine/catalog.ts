/**
 * The pool's tables in memory: layers by id, and volumes and snapshots by name (one namespace:
 * both are exports). It knows how to rebuild itself from pool.json plus the checkpoint's
 * maps, how to write itself back, and which layers are garbage (reachable from no export).
 * It does no I/O; engine/pool.ts persists what it changes.
 */
import assert from 'node:assert/strict';
import { EngineError } from './errors.ts';
import { BlockMap } from './index/block-map.ts';
import { Layer } from './layer.ts';
import { quoteName } from './names.ts';
import type { LayerRecord, PoolMeta, SnapshotRecord, VolumeRecord } from './pool-meta.ts';
import type { SegmentUsage } from './segment-usage.ts';
import { VolumeState } from './volume-state.ts';

export class Catalog {
  readonly layers = new Map<number, Layer>();
  readonly exports = new Map<string, VolumeState>();
  nextLayerId: number;
  /** Set once recovery has replayed the log; from then on every layer reports to it. */
  #usage: SegmentUsage | undefined;

  constructor(nextLayerId = 1) {
    this.nextLayerId = nextLayerId;
  }

  static fromMeta(meta: PoolMeta, maps: Map<number, BlockMap> | undefined): Catalog {
    const catalog = new Catalog(meta.nextLayerId);
    const records = new Map(meta.layers.map((r) => [r.id, r]));
    const build = (id: number, seen: Set<number>): Layer => {
      const existing = catalog.layers.get(id);
      if (existing) return existing;
      const rec = records.get(id);
      if (!rec || seen.has(id)) throw new EngineError('CORRUPTION', `pool.json: layer ${id} is missing or in a cycle`);
      seen.add(id);
      const parent = rec.parentId === 0 ? undefined : build(rec.parentId, seen);
      const layer = new Layer(id, parent, rec.createdAtMs, maps?.get(id) ?? new BlockMap());
      layer.flattened = rec.flattened === true;
      catalog.layers.set(id, layer);
      return layer;
    };
    for (const rec of meta.layers) build(rec.id, new Set());
    const top = (id: number): Layer => {
      const layer = catalog.layers.get(id);
      if (!layer) throw new EngineError('CORRUPTION', `pool.json: export refers to missing layer ${id}`);
      return layer;
    };
    for (const v of meta.volumes) {
      catalog.exports.set(v.name, new VolumeState({ kind: 'volume', name: v.name, sizeBytes: v.sizeBytes, createdAtMs: v.createdAtMs, top: top(v.layerId), dedup: v.dedup, dedupDomain: v.dedupDomain ?? '' }));
    }
    for (const s of meta.snapshots) {
      const layer = top(s.layerId);
      layer.frozen = true;
      catalog.exports.set(s.name, new VolumeState({ kind: 'snapshot', name: s.name, sizeBytes: s.sizeBytes, createdAtMs: s.createdAtMs, top: layer, sourceVolume: s.sourceVolume, dedup: s.dedup === true, dedupDomain: s.dedupDomain ?? '' }));
    }
    // Every layer below a top is frozen: only tops of volumes take writes.
    for (const e of catalog.exports.values()) for (let l = e.top.parent; l; l = l.parent) l.frozen = true;
    return catalog;
  }

  /** The tables as pool.json stores them; parents are listed before children. */
  toMeta(): Pick<PoolMeta, 'nextLayerId' | 'layers' | 'volumes' | 'snapshots'> {
    const live = this.#reachable();
    const layers: LayerRecord[] = [];
    const listed = new Set<number>();
    const list = (l: Layer): void => {
      if (listed.has(l.id)) return;
      if (l.parent) list(l.parent);
      listed.add(l.id);
      layers.push({ id: l.id, parentId: l.parent?.id ?? 0, createdAtMs: l.createdAtMs, ...(l.flattened ? { flattened: true } : {}) });
    };
    for (const l of this.layers.values()) if (live.has(l.id)) list(l);
    const volumes: VolumeRecord[] = [];
    const snapshots: SnapshotRecord[] = [];
    for (const e of this.exports.values()) {
      const base = { name: e.name, layerId: (e.nextTop ?? e.top).id, sizeBytes: e.sizeBytes, createdAtMs: e.createdAtMs };
      const domain = e.dedupDomain === '' ? {} : { dedupDomain: e.dedupDomain };
      if (e.kind === 'volume') volumes.push({ ...base, dedup: e.dedup, ...domain });
      else snapshots.push({ ...base, sourceVolume: e.sourceVolume, dedup: e.dedup, ...domain });
    }
    return { nextLayerId: this.nextLayerId, layers, volumes, snapshots };
  }

  newLayer(parent: Layer | undefined, index?: BlockMap): Layer {
    const layer = new Layer(this.nextLayerId++, parent, Date.now(), index);
    this.layers.set(layer.id, layer);
    if (this.#usage) {
      layer.usage = this.#usage;
      if (index) this.#usage.addMap(index);
    }
    return layer;
  }

  /** Starts usage accounting: counts every layer's references as they are now. */
  attachUsage(usage: SegmentUsage): void {
    this.#usage = usage;
    for (const layer of this.layers.values()) {
      usage.addMap(layer.index);
      layer.usage = usage;
    }
  }

  checkNameFree(name: string): void {
    const taken = this.exports.get(name);
    if (taken) throw new EngineError('ALREADY_EXISTS', `${taken.kind} ${quoteName(name)} already exists`);
  }

  getExport(name: string): VolumeState {
    const e = this.exports.get(name);
    if (!e) throw new EngineError('NOT_FOUND', `no volume or snapshot named ${quoteName(name)}`);
    return e;
  }

  getVolume(name: string): VolumeState {
    const e = this.exports.get(name);
    if (!e || e.kind !== 'volume') throw new EngineError('NOT_FOUND', `volume ${quoteName(name)} not found`);
    return e;
  }

  getSnapshot(name: string): VolumeState {
    const e = this.exports.get(name);
    if (!e || e.kind !== 'snapshot') throw new EngineError('NOT_FOUND', `snapshot ${quoteName(name)} not found`);
    return e;
  }

  list(kind: 'volume' | 'snapshot'): VolumeState[] {
    return [...this.exports.values()].filter((e) => e.kind === kind).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Ids of the layers some export reaches through its chain (or the one it is moving to). */
  #reachable(): Set<number> {
    const live = new Set<number>();
    for (const e of this.exports.values()) {
      for (const top of [e.top, e.nextTop]) for (let l = top; l && !live.has(l.id); l = l.parent) live.add(l.id);
    }
    return live;
  }

  /**
   * Drops the layers no export reaches; returns them. Call only once pool.json without them is
   * durable: a checkpoint taken afterwards no longer carries their maps.
   */
  collectGarbage(): Layer[] {
    const live = this.#reachable();
    const dropped: Layer[] = [];
    for (const [id, layer] of this.layers) {
      if (live.has(id)) continue;
      this.layers.delete(id);
      this.#usage?.removeMap(layer.index);
      layer.usage = undefined;
      dropped.push(layer);
    }
    return dropped;
  }

  /** Children of a layer (layers whose parent it is). */
  childrenOf(layer: Layer): Layer[] {
    const out: Layer[] = [];
    for (const l of this.layers.values()) if (l.parent === layer) out.push(l);
    assert.ok(!out.includes(layer));
    return out;
  }
}
