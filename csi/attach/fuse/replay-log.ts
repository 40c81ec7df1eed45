/**
 * Writes the engine acknowledged that no completed FLUSH covers yet, kept so that they can be
 * sent again after a reconnect.
 *
 * Why: the engine answers a WRITE once the data is in its in-memory batch, before it is on disk
 * (NBD allows a server to cache). If the engine is killed, those writes may be gone, yet the
 * kernel already counts them as written, and the next fsync it sends must make them durable. So
 * until a FLUSH completes, every acknowledged WRITE, WRITE_ZEROES and TRIM stays here, in the
 * order the engine acknowledged them, and a new connection replays them before anything else.
 *
 *   acknowledged:  seq 0   1   2   3   4   5
 *                  ───────────┬───────────────
 *   FLUSH sent when next seq was 3, and completed:  release(3) drops 0..2
 *
 * A FLUSH covers exactly the writes acknowledged before it was sent (NBD: "completed prior to
 * processing this command"), so each FLUSH carries the `mark` taken when it was sent.
 *
 * Replay order: an old write must never land after a newer one to the same bytes. The entries
 * are replayed in waves (`replayWaves`): a wave never holds two overlapping entries, and the next
 * wave starts only when every request of the previous one is answered, because a server may
 * complete pipelined requests in any order.
 */
import assert from 'node:assert/strict';

/** Bookkeeping cost of one entry, so that many small trims still count against the bound. */
export const ENTRY_OVERHEAD_BYTES = 64;
/** Requests in flight in one replay wave. */
export const MAX_WAVE_ENTRIES = 256;

export interface Mutation {
  seq: number;
  command: number;
  offset: number;
  length: number;
  /** WRITE payload; undefined for WRITE_ZEROES and TRIM. */
  data: Buffer | undefined;
}

export function mutationCost(data: Buffer | undefined): number {
  return ENTRY_OVERHEAD_BYTES + (data?.length ?? 0);
}

export class ReplayLog {
  #entries: Mutation[] = [];
  /** Index of the oldest live entry in #entries (dropping from the front without shifting). */
  #head = 0;
  #nextSeq = 0;
  #bytes = 0;

  /** Bytes held, payload plus bookkeeping. */
  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#entries.length - this.#head;
  }

  /** Where a FLUSH sent now covers up to (exclusive). */
  get mark(): number {
    return this.#nextSeq;
  }

  /** Records an acknowledged mutation; `data` is kept as it is, never copied. */
  record(command: number, offset: number, length: number, data: Buffer | undefined): void {
    this.#entries.push({ seq: this.#nextSeq++, command, offset, length, data });
    this.#bytes += mutationCost(data);
  }

  /** Drops every entry a FLUSH sent at `mark` made durable. */
  release(mark: number): void {
    assert.ok(mark <= this.#nextSeq, 'a flush mark from the future');
    while (this.#head < this.#entries.length && this.#entries[this.#head]!.seq < mark) {
      this.#bytes -= mutationCost(this.#entries[this.#head]!.data);
      this.#entries[this.#head++] = undefined as unknown as Mutation; // let the payload go
    }
    if (this.#head === this.#entries.length) {
      this.#entries = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#entries.length) {
      this.#entries = this.#entries.slice(this.#head);
      this.#head = 0;
    }
    assert.ok(this.#bytes >= 0);
  }

  /** The live entries, oldest first. */
  entries(): Mutation[] {
    return this.#entries.slice(this.#head);
  }
}

/**
 * Splits entries (oldest first) into waves that can each be sent at once: within a wave no two
 * entries overlap, and a wave holds at most `maxEntries`. Order is kept across waves.
 */
export function replayWaves(entries: readonly Mutation[], maxEntries = MAX_WAVE_ENTRIES): Mutation[][] {
  const waves: Mutation[][] = [];
  let wave: Mutation[] = [];
  for (const entry of entries) {
    if (wave.length >= maxEntries || wave.some((w) => overlaps(w, entry))) {
      waves.push(wave);
      wave = [];
    }
    wave.push(entry);
  }
  if (wave.length > 0) waves.push(wave);
  return waves;
}

function overlaps(a: Mutation, b: Mutation): boolean {
  return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}
