/**
 * Per-volume and per-snapshot operation locks, the way csi-driver-host-path and TopoLVM keep
 * them: a thin wrapper around lock-free logic. The CO is meant to send one operation per volume
 * at a time; when it loses track (a restart) and sends a second one while the first runs, the
 * second gets ABORTED ("operation pending for volume") and the CO retries it later. Nothing
 * waits, so a stuck engine call cannot pile up work behind it.
 *
 * Keys are strings chosen by the caller; lockKey() namespaces them so that a CSI name and an ID
 * that happen to be equal do not collide.
 */
import { status } from '@grpc/grpc-js';
import { CsiError } from './status.ts';

export type LockKind = 'volume-name' | 'volume-id' | 'snapshot-name' | 'snapshot-id';

export function lockKey(kind: LockKind, value: string): string {
  return `${kind}:${value}`;
}

export class OperationLocks {
  readonly #held = new Set<string>();

  /**
   * Runs `operation` holding every key, all or none: ABORTED at once if any key is held. Keys
   * are taken synchronously, before `operation` starts, so two calls in the same tick cannot
   * both get them.
   */
  async run<T>(keys: readonly string[], operation: () => Promise<T>): Promise<T> {
    const busy = keys.find((key) => this.#held.has(key));
    if (busy !== undefined) {
      throw new CsiError(status.ABORTED, `an operation on ${busy} is already in progress; retry later`);
    }
    const taken = [...new Set(keys)];
    for (const key of taken) this.#held.add(key);
    try {
      return await operation();
    } finally {
      for (const key of taken) this.#held.delete(key);
    }
  }

  /** Keys held right now, for tests and debugging. */
  get heldKeys(): string[] {
    return [...this.#held];
  }
}
