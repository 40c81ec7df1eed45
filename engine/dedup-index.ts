/**
 * Inline dedup's content index: SHA-256 of a 4 KiB block → the pbn of one stored copy.
 *
 * Matching on SHA-256 (not a short checksum) is what makes a false match, and so one volume
 * reading another's data, practically impossible (a collision is a 2^-128 event); no byte
 * comparison is needed on the write path.
 *
 * Only blocks written by dedup-enabled volumes are indexed, and only they look up: volumes
 * without dedup pay nothing and reveal nothing (see docs/security.md on side channels).
 *
 * The index is a cache of opportunities, not state that correctness depends on: an entry
 * points at a block that exists (entries of a segment are dropped before the cleaner moves or
 * deletes it), and losing the index (a restart) only loses future matches against old data.
 */
import { hash } from 'node:crypto';
import { BLOCK_SIZE } from './block-device.ts';

export class DedupIndex {
  readonly #blocksPerSegment: number;
  readonly #pbnOf = new Map<string, number>();
  /** The keys whose block lives in each segment, to drop them with the segment. */
  readonly #keysOf = new Map<number, string[]>();
  /** Segments being cleaned or gone: no new reference may point into them. */
  readonly #closed = new Set<number>();
  /** Blocks written as references instead of data, since the pool opened. */
  referencedBlocks = 0;
  hashedBlocks = 0;

  constructor(blocksPerSegment: number) {
    this.#blocksPerSegment = blocksPerSegment;
  }

  get size(): number {
    return this.#pbnOf.size;
  }

  /**
   * The key of the block at buf[offset..] in a dedup domain: its SHA-256 (as a string usable as
   * a Map key), prefixed by the domain so that domains never match each other.
   */
  key(buf: Buffer, offset: number, domain: string): string {
    this.hashedBlocks++;
    const digest = hash('sha256', buf.subarray(offset, offset + BLOCK_SIZE), 'base64');
    return domain === '' ? digest : `${domain}/${digest}`;
  }

  /** The pbn of a stored block with this content, if one may be referenced. */
  lookup(key: string): number | undefined {
    return this.#pbnOf.get(key);
  }

  /** A block with this content was just placed at pbn. */
  remember(key: string, pbn: number): void {
    const segmentNo = Math.floor(pbn / this.#blocksPerSegment);
    if (this.#closed.has(segmentNo) || this.#pbnOf.has(key)) return;
    this.#pbnOf.set(key, pbn);
    let keys = this.#keysOf.get(segmentNo);
    if (!keys) this.#keysOf.set(segmentNo, (keys = []));
    keys.push(key);
  }

  /** The cleaner is about to move the segment's blocks: stop handing them out. */
  closeSegment(segmentNo: number): void {
    this.#closed.add(segmentNo);
    const keys = this.#keysOf.get(segmentNo);
    if (!keys) return;
    this.#keysOf.delete(segmentNo);
    for (const key of keys) {
      const pbn = this.#pbnOf.get(key);
      if (pbn !== undefined && Math.floor(pbn / this.#blocksPerSegment) === segmentNo) this.#pbnOf.delete(key);
    }
  }

  /** The segment's number may be used again (it was deleted, or cleaning gave up on it). */
  reopenSegment(segmentNo: number): void {
    this.#closed.delete(segmentNo);
  }
}
