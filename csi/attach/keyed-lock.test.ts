import { describe, expect, it } from 'vitest';
import { KeyedLock } from './keyed-lock.ts';

const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 5));

describe('KeyedLock', () => {
  it('runs operations on one key one at a time, in order', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const op = (name: string) => async (): Promise<void> => {
      log.push(`${name} start`);
      await tick();
      log.push(`${name} end`);
    };
    await Promise.all([lock.run('a', op('1')), lock.run('a', op('2')), lock.run('a', op('3'))]);
    expect(log).toEqual(['1 start', '1 end', '2 start', '2 end', '3 start', '3 end']);
    expect(lock.busyKeys).toBe(0);
  });

  it('runs different keys in parallel', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const op = (name: string) => async (): Promise<void> => {
      log.push(`${name} start`);
      await tick();
      log.push(`${name} end`);
    };
    await Promise.all([lock.run('a', op('a')), lock.run('b', op('b'))]);
    expect(log.slice(0, 2).sort()).toEqual(['a start', 'b start']);
  });

  it('releases the key when an operation fails', async () => {
    const lock = new KeyedLock();
    const failing = lock.run('a', async () => {
      throw new Error('boom');
    });
    const next = lock.run('a', async () => 42);
    await expect(failing).rejects.toThrow('boom');
    expect(await next).toBe(42);
    expect(lock.busyKeys).toBe(0);
  });
});
