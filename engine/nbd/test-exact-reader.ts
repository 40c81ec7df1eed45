/**
 * Exact reads over a socket, for the raw test clients of the NBD tests: incoming bytes are
 * kept until a read asks for exactly n of them. Test-only; nothing in the engine imports it.
 */
import type net from 'node:net';

export class ExactReader {
  #buffered = Buffer.alloc(0);
  #ended = false;
  #wake: (() => void) | null = null;

  /** Bytes received and not read yet. */
  get pending(): number {
    return this.#buffered.length;
  }

  /**
   * Follows a socket's data (a later socket replaces an earlier one, e.g. TLS over TCP);
   * resolves when it closes.
   */
  attach(socket: net.Socket): Promise<void> {
    this.#ended = false;
    socket.on('data', (chunk: Buffer) => {
      this.#buffered = Buffer.concat([this.#buffered, chunk]);
      this.#wake?.();
    });
    socket.on('error', () => {});
    socket.on('end', () => this.#end());
    return new Promise((resolve) => {
      socket.on('close', () => {
        this.#end();
        resolve();
      });
    });
  }

  /** Exactly `n` bytes; throws if the connection ends first. */
  async read(n: number): Promise<Buffer> {
    while (this.#buffered.length < n) {
      if (this.#ended) throw new Error(`connection ended with ${this.#buffered.length} of ${n} bytes`);
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = null;
    }
    const out = this.#buffered.subarray(0, n);
    this.#buffered = this.#buffered.subarray(n);
    return out;
  }

  #end(): void {
    this.#ended = true;
    this.#wake?.();
  }
}
