import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { lockKey, OperationLocks } from './locks.ts';

describe('OperationLocks', () => {
  it('answers ABORTED to a second operation on a held key, and frees keys afterwards', async () => {
    const locks = new OperationLocks();
    let release!: () => void;
    const first = locks.run([lockKey('volume-id', 'v1')], () => new Promise<string>((resolve) => (release = () => resolve('done'))));
    await expect(locks.run([lockKey('volume-id', 'v1')], async () => 'second')).rejects.toMatchObject({ code: status.ABORTED });
    await expect(locks.run([lockKey('volume-id', 'v2')], async () => 'other')).resolves.toBe('other');
    release();
    await expect(first).resolves.toBe('done');
    expect(locks.heldKeys).toEqual([]);
    await expect(locks.run([lockKey('volume-id', 'v1')], async () => 'again')).resolves.toBe('again');
  });

  it('takes all keys or none and releases them when the operation fails', async () => {
    const locks = new OperationLocks();
    let release!: () => void;
    const held = locks.run(['b'], () => new Promise<void>((resolve) => (release = resolve)));
    await expect(locks.run(['a', 'b'], async () => undefined)).rejects.toMatchObject({ code: status.ABORTED });
    expect(locks.heldKeys).toEqual(['b']);
    release();
    await held;
    await expect(locks.run(['a'], async () => Promise.reject(new Error('x')))).rejects.toThrow('x');
    expect(locks.heldKeys).toEqual([]);
  });

  it('keeps kinds apart', () => {
    expect(lockKey('volume-name', 'x')).not.toBe(lockKey('volume-id', 'x'));
  });
});
