import { describe, expect, it } from 'vitest';
import { WriteBudget } from './write-budget.ts';
import type { BudgetWaiter } from './write-budget.ts';

/** A waiter that records when it was granted. */
function waiter(bytes: number, log: string[], name: string, onGrant?: () => void): BudgetWaiter {
  return {
    budgetWantedBytes: bytes,
    grantBudget() {
      log.push(name);
      onGrant?.();
    },
  };
}

describe('WriteBudget', () => {
  it('reserves at once while there is room', () => {
    const budget = new WriteBudget(100);
    const log: string[] = [];
    expect(budget.reserveOrWait(waiter(60, log, 'a'))).toBe(true);
    expect(budget.reserveOrWait(waiter(40, log, 'b'))).toBe(true);
    expect(budget.inUseBytes).toBe(100);
    expect(budget.hasWaiters).toBe(false);
    expect(log).toEqual([]);
  });

  it('queues what does not fit and grants it when room is released', () => {
    const budget = new WriteBudget(100);
    const log: string[] = [];
    expect(budget.reserveOrWait(waiter(80, log, 'a'))).toBe(true);
    expect(budget.reserveOrWait(waiter(50, log, 'b'))).toBe(false);
    expect(budget.hasWaiters).toBe(true);
    budget.release(20);
    expect(log).toEqual([]);
    budget.release(60);
    expect(log).toEqual(['b']);
    expect(budget.inUseBytes).toBe(50);
    expect(budget.hasWaiters).toBe(false);
  });

  it('serves waiters in arrival order: a small request never overtakes a large one', () => {
    const budget = new WriteBudget(100);
    const log: string[] = [];
    budget.reserveOrWait(waiter(90, log, 'first'));
    expect(budget.reserveOrWait(waiter(100, log, 'large'))).toBe(false);
    // Would fit right now, but 'large' is waiting.
    expect(budget.reserveOrWait(waiter(10, log, 'small'))).toBe(false);
    budget.release(90);
    expect(log).toEqual(['large']);
    budget.release(100);
    expect(log).toEqual(['large', 'small']);
  });

  it('grants several waiters at once when they all fit', () => {
    const budget = new WriteBudget(100);
    const log: string[] = [];
    budget.reserveOrWait(waiter(100, log, 'holder'));
    for (const name of ['a', 'b', 'c']) budget.reserveOrWait(waiter(30, log, name));
    budget.release(100);
    expect(log).toEqual(['a', 'b', 'c']);
    expect(budget.inUseBytes).toBe(90);
  });

  it('lets the next waiters through when the head of the queue cancels', () => {
    const budget = new WriteBudget(100);
    const log: string[] = [];
    budget.reserveOrWait(waiter(50, log, 'holder'));
    const large = waiter(100, log, 'large');
    budget.reserveOrWait(large);
    budget.reserveOrWait(waiter(50, log, 'small'));
    budget.cancel(large);
    expect(log).toEqual(['small']);
    expect(budget.inUseBytes).toBe(100);
  });

  it('stays consistent when a grant releases bytes again at once', () => {
    const budget = new WriteBudget(100);
    const log: string[] = [];
    budget.reserveOrWait(waiter(100, log, 'holder'));
    // 'a' answers immediately (say, its write failed at once) and gives its bytes back.
    budget.reserveOrWait(waiter(100, log, 'a', () => budget.release(100)));
    budget.reserveOrWait(waiter(100, log, 'b'));
    budget.release(100);
    expect(log).toEqual(['a', 'b']);
    expect(budget.inUseBytes).toBe(100);
    expect(budget.hasWaiters).toBe(false);
  });

  it('signals when contention begins, once per episode', () => {
    let signals = 0;
    const budget = new WriteBudget(100, () => signals++);
    const log: string[] = [];
    budget.reserveOrWait(waiter(100, log, 'holder'));
    budget.reserveOrWait(waiter(10, log, 'a'));
    budget.reserveOrWait(waiter(10, log, 'b'));
    expect(signals).toBe(1);
    budget.release(100);
    expect(budget.hasWaiters).toBe(false);
    budget.reserveOrWait(waiter(100, log, 'c'));
    expect(signals).toBe(2);
  });

  it('refuses requests larger than the whole budget and releases of what was never reserved', () => {
    const budget = new WriteBudget(100);
    expect(() => budget.reserveOrWait(waiter(101, [], 'x'))).toThrow();
    expect(() => budget.release(1)).toThrow();
  });
});
