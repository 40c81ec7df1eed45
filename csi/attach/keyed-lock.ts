/**
 * Serialises operations per key (export name) within this process: an attach and a detach of
 * the same export never interleave, while different exports proceed in parallel. Entries are
 * removed when their last operation ends, so the map holds only keys with work in flight.
 */
export class KeyedLock {
  readonly #tails = new Map<string, Promise<void>>();

  async run<T>(key: string, operation: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.#tails.set(key, tail);
    await previous;
    try {
      return await operation();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }

  /** Keys with an operation running or waiting (for tests). */
  get busyKeys(): number {
    return this.#tails.size;
  }
}
