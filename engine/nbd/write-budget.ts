/**
 * One server-wide budget for WRITE payload bytes in flight, shared by every connection. A
 * connection reserves a WRITE's whole length when it has parsed (and checked) the header,
 * before it allocates anything for the payload, and gives it back when the WRITE has been
 * answered: the engine may hold a copy of the payload until then (read-modify-write, waiting
 * for room in the log).
 *
 * Reserving the whole length up front, rather than bytes as they arrive, is what keeps
 * connections from deadlocking: a connection that holds a reservation can always finish its
 * payload, whereas many half-received payloads could fill the budget with none of them able to
 * complete. Waiters are served first come, first served, so small writes cannot starve a large
 * one.
 *
 * Invariant: 0 <= inUseBytes <= capacityBytes, and a waiter is granted only when its whole
 * request fits.
 */
import assert from 'node:assert/strict';

/** A connection waiting for room. `grant` runs once its bytes have been reserved for it. */
export interface BudgetWaiter {
  readonly budgetWantedBytes: number;
  grantBudget(): void;
}

export class WriteBudget {
  readonly capacityBytes: number;
  private inUse = 0;
  /** In arrival order (a Set iterates in insertion order and deletes in O(1)). */
  private readonly waiters = new Set<BudgetWaiter>();
  private readonly onFirstWaiter: () => void;

  /** `onFirstWaiter` runs when the queue goes from empty to not empty (contention begins). */
  constructor(capacityBytes: number, onFirstWaiter: () => void = () => {}) {
    assert.ok(Number.isSafeInteger(capacityBytes) && capacityBytes >= 1, 'write budget capacity');
    this.capacityBytes = capacityBytes;
    this.onFirstWaiter = onFirstWaiter;
  }

  get inUseBytes(): number {
    return this.inUse;
  }

  /** Someone is waiting for room: a connection stalled mid-payload is then in their way. */
  get hasWaiters(): boolean {
    return this.waiters.size > 0;
  }

  /**
   * Reserves `waiter.budgetWantedBytes` at once and returns true, or queues the waiter (whose
   * grantBudget() runs later, from some release()) and returns false. Nobody jumps the queue.
   */
  reserveOrWait(waiter: BudgetWaiter): boolean {
    const bytes = waiter.budgetWantedBytes;
    assert.ok(bytes >= 1 && bytes <= this.capacityBytes, 'a reservation must fit the whole budget');
    assert.ok(!this.waiters.has(waiter), 'already waiting');
    if (this.waiters.size === 0 && this.inUse + bytes <= this.capacityBytes) {
      this.inUse += bytes;
      return true;
    }
    this.waiters.add(waiter);
    if (this.waiters.size === 1) this.onFirstWaiter();
    return false;
  }

  /** Withdraws a waiter that no longer wants room (its connection closed). */
  cancel(waiter: BudgetWaiter): void {
    this.waiters.delete(waiter);
    // The head of the queue may have been what held the others back.
    this.grantWaiting();
  }

  release(bytes: number): void {
    assert.ok(bytes >= 0 && bytes <= this.inUse, 'released more than was reserved');
    this.inUse -= bytes;
    if (this.waiters.size > 0) this.grantWaiting();
  }

  /**
   * Grants waiters in order while the first fits. A grant may re-enter release() (the granted
   * connection can answer a request at once); each round re-reads the queue, so that is safe.
   */
  private grantWaiting(): void {
    for (;;) {
      const first = firstOf(this.waiters);
      if (first === undefined || this.inUse + first.budgetWantedBytes > this.capacityBytes) return;
      this.waiters.delete(first);
      this.inUse += first.budgetWantedBytes;
      first.grantBudget();
    }
  }
}

function firstOf<T>(set: Set<T>): T | undefined {
  for (const item of set) return item;
  return undefined;
}
