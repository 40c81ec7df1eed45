/**
 * Corruption injected by a simulation, and what it excuses. A damaged block must be detected
 * (a read fails with CORRUPTION or IO_ERROR, or recovery refuses the pool) and never returned
 * as data; damage to a block nothing references any more must change nothing at all.
 *
 * What a damaged segment block was is found by walking the segment's records on the medium
 * just before the damage: a record header, a data block, a record's meta area, or unused
 * space. Whether a data block is still referenced is judged by content: every write of the
 * simulation is unique, so a block whose bytes are some export's allowed value is (maybe) live.
 *
 * Damage is injected only where the engine promises to detect it: not into the log's tail of
 * records that no later durable record vouches for (format.ts `syncedSeq`). There, damage looks
 * exactly like a write torn by a power cut and recovery ends the log before it — the one
 * documented limit (docs/reliability.md): at most the records since the last flush that a
 * later durable record confirms.
 */
import { BLOCK_SIZE } from '../block-device.ts';
import { parseHeader, recordBytes } from '../log/format.ts';
import type { Corruption, SimDisk } from '../storage/sim-disk.ts';
import type { DamageCatalog, ReadExcuse } from './checker.ts';
import { allowedValues, type ExportModel, type Model } from './model.ts';
import type { Step } from './scenario.ts';

type CorruptStep = Extract<Step, { kind: 'corrupt' }>;

export type DamagedKind = 'header' | 'data' | 'meta-area' | 'unused' | 'checkpoint' | 'pool-meta';

export interface InjectedDamage {
  step: number;
  kind: DamagedKind;
  corruption: Corruption;
}

const SEGMENT = /^segment-\d+\.log$/;

/** The highest seq that some durable record vouches for (0: none). */
function vouchedUpTo(images: Buffer[]): number {
  let upTo = 0;
  for (const image of images) {
    for (let at = 0; at + BLOCK_SIZE <= image.length; ) {
      const check = parseHeader(image.subarray(at, at + BLOCK_SIZE));
      if (!check.ok) break;
      upTo = Math.max(upTo, check.header.syncedSeq);
      at += recordBytes(check.header);
    }
  }
  return upTo;
}

/** Per block of a segment's durable image: what the log has there, and the record's seq. */
function classifySegment(image: Buffer, seqs: number[] = []): DamagedKind[] {
  const blocks = Math.floor(image.length / BLOCK_SIZE);
  const kinds: DamagedKind[] = Array.from({ length: blocks }, () => 'unused');
  for (let at = 0; at < blocks; ) {
    const check = parseHeader(image.subarray(at * BLOCK_SIZE, (at + 1) * BLOCK_SIZE));
    if (!check.ok) break;
    const length = recordBytes(check.header) / BLOCK_SIZE;
    kinds[at] = 'header';
    for (let i = 0; i < length && at + i < blocks; i++) seqs[at + i] = check.header.seq;
    for (let i = 1; i < length && at + i < blocks; i++) kinds[at + i] = i <= check.header.dataBlocks ? 'data' : 'meta-area';
    at += length;
  }
  return kinds;
}

function isReferenced(model: Model, value: Buffer): boolean {
  for (const e of model.exports.values()) {
    for (const b of e.blocks) if (allowedValues(b).some((v) => v.equals(value))) return true;
  }
  return false;
}

export class DamageTracker implements DamageCatalog {
  readonly #all: InjectedDamage[] = [];

  get injected(): readonly InjectedDamage[] {
    return this.#all;
  }

  /** Damages the block the step names; returns why nothing was done when there was no target. */
  async inject(disk: SimDisk, stepIndex: number, step: CorruptStep): Promise<InjectedDamage | string> {
    const names = (await disk.fileNames()).sort();
    let name: string | undefined;
    let kinds: DamagedKind[];
    let targetable = (_block: number): boolean => true;
    if (step.file === 'segment') {
      const segments = names.filter((n) => SEGMENT.test(n));
      if (segments.length === 0) return 'no segment file';
      name = segments[step.target % segments.length]!;
      const image = (n: string): Buffer => disk.readDurable(n, 0, disk.durableLength(n) ?? 0);
      const seqs: number[] = [];
      kinds = classifySegment(image(name), seqs);
      const upTo = vouchedUpTo(segments.map(image));
      targetable = (block) => seqs[block] === undefined || seqs[block]! <= upTo;
    } else {
      name = step.file === 'checkpoint' ? 'index.ckpt' : 'pool.json';
      const length = disk.durableLength(name) ?? 0;
      kinds = Array.from({ length: Math.ceil(length / BLOCK_SIZE) }, () => (step.file === 'checkpoint' ? 'checkpoint' : 'pool-meta'));
    }
    if (kinds.length === 0) return `${name} is empty or missing on the medium`;
    // Mostly hit something the log uses; sometimes anywhere, unused space included.
    const used = kinds.flatMap((k, i) => (k === 'unused' || !targetable(i) ? [] : [i]));
    const anywhere = kinds.flatMap((_k, i) => (targetable(i) ? [i] : []));
    if (anywhere.length === 0) return `${name} holds only records no later record vouches for`;
    const block = used.length > 0 && step.block % 10 !== 0 ? used[step.block % used.length]! : anywhere[step.block % anywhere.length]!;
    // Damaging a damaged block again: what the log had there is the first damage's original.
    const earlier = this.outstanding(disk).find((d) => d.corruption.name === name && d.corruption.position === block * BLOCK_SIZE);
    const corruption = disk.corruptBlock(name, block, BLOCK_SIZE);
    if (earlier) corruption.original = earlier.corruption.original;
    const damage: InjectedDamage = { step: stepIndex, kind: earlier?.kind ?? kinds[block]!, corruption };
    this.#all.push(damage);
    return damage;
  }

  /** Damage still on the medium (not overwritten since, file not replaced or deleted). */
  outstanding(disk: SimDisk): InjectedDamage[] {
    return this.#all.filter((d) => {
      const c = d.corruption;
      const length = disk.durableLength(c.name);
      return length !== undefined && length >= c.position + c.length && disk.readDurable(c.name, c.position, c.length).equals(c.corrupted);
    });
  }

  /** Whether damage may make reading this block fail, and why. */
  readExcuse(disk: SimDisk): ReadExcuse {
    const outstanding = this.outstanding(disk);
    return (e: ExportModel, lba: number) => {
      const state = e.blocks[lba];
      for (const d of outstanding) {
        if (d.kind === 'data' && state && allowedValues(state).some((v) => v.equals(d.corruption.original))) {
          return { why: `damage to its data (${describe(d)})`, holds: d.corruption.original };
        }
      }
      const header = outstanding.find((d) => d.kind === 'header' || d.kind === 'meta-area');
      return header ? { why: `damage to a record's ${header.kind} (${describe(header)})` } : undefined;
    };
  }

  /**
   * Whether damage may make recovery refuse the pool, and why: anything but damage to unused
   * space or to data no export references any more.
   */
  refusalExcuse(disk: SimDisk, model: Model): string | undefined {
    for (const d of this.outstanding(disk)) {
      if (d.kind === 'unused') continue;
      if (d.kind === 'data' && !isReferenced(model, d.corruption.original)) continue;
      return describe(d);
    }
    return undefined;
  }

  /** Every damage injected so far and whether it is still on the medium, for failure messages. */
  summary(disk: SimDisk, model: Model): string {
    const outstanding = new Set(this.outstanding(disk));
    const out = this.#all.map((d) => {
      const referenced = d.kind === 'data' ? (isReferenced(model, d.corruption.original) ? ', its data referenced' : ', its data unreferenced') : '';
      return `${describe(d)}${referenced}${outstanding.has(d) ? '' : ', since overwritten or removed'}`;
    });
    return out.length === 0 ? 'none' : out.join('; ');
  }

  describe(value: Buffer): string | undefined {
    for (const d of this.#all) {
      if (d.corruption.length === BLOCK_SIZE && value.equals(d.corruption.corrupted)) return `the damaged bytes injected at step ${d.step} (${describe(d)})`;
    }
    return undefined;
  }
}

export function describe(d: InjectedDamage): string {
  return `${d.kind} block ${d.corruption.position / BLOCK_SIZE} of ${d.corruption.name}, step ${d.step}`;
}
