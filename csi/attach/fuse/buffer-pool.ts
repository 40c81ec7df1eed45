/**
 * Reply buffers for READ, reused: a 1 MiB reply is allocated once and serves request after
 * request, instead of one allocation (and one garbage collection) per read. The pool keeps at
 * most `keep` idle buffers; a burst beyond that allocates, and the extras are dropped on return.
 */
const DEFAULT_KEEP = 16;

export class BufferPool {
  readonly bufferBytes: number;
  readonly #keep: number;
  readonly #idle: Buffer[] = [];

  constructor(bufferBytes: number, keep = DEFAULT_KEEP) {
    this.bufferBytes = bufferBytes;
    this.#keep = keep;
  }

  take(): Buffer {
    return this.#idle.pop() ?? Buffer.allocUnsafeSlow(this.bufferBytes);
  }

  give(buf: Buffer): void {
    if (buf.length === this.bufferBytes && this.#idle.length < this.#keep) this.#idle.push(buf);
  }

  get idle(): number {
    return this.#idle.length;
  }
}
