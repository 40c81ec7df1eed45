import { describe, expect, it } from 'vitest';
import { EngineError } from '../errors.ts';
import { MemoryStorage, SECTOR_BYTES, type PowerCutPolicy } from './memory-storage.ts';

function bytes(length: number, value: number): Buffer {
  return Buffer.alloc(length, value);
}

async function contentOf(storage: MemoryStorage, name: string): Promise<Buffer | undefined> {
  return storage.readFile(name);
}

describe('MemoryStorage', () => {
  it('keeps synced data and loses the rest at a power cut', async () => {
    const s = new MemoryStorage();
    const f = await s.open('a', { create: true });
    await f.write(bytes(4096, 1), 0, 4096, 0);
    await f.datasync();
    await s.syncDir();
    await f.write(bytes(4096, 2), 0, 4096, 0);
    await f.write(bytes(4096, 3), 0, 4096, 4096);
    expect((await contentOf(s, 'a'))!.length).toBe(8192); // reads see the page cache
    const after = s.powerCut();
    expect(await contentOf(after, 'a')).toEqual(bytes(4096, 1));
  });

  it('keeps directory changes only up to the last syncDir', async () => {
    const s = new MemoryStorage();
    const a = await s.open('a', { create: true });
    await a.write(bytes(10, 7), 0, 10, 0);
    await a.datasync();
    await s.syncDir();
    await s.rename('a', 'b');
    const c = await s.open('c', { create: true });
    await c.datasync();
    const after = s.powerCut();
    expect((await after.list()).sort()).toEqual(['a']);
    expect(await contentOf(after, 'a')).toEqual(bytes(10, 7));
  });

  it('an unsynced truncate is undone by a power cut', async () => {
    const s = new MemoryStorage();
    const f = await s.open('a', { create: true });
    await f.write(bytes(8192, 5), 0, 8192, 0);
    await f.datasync();
    await s.syncDir();
    await f.truncate(100);
    expect(await f.sizeBytes()).toBe(100);
    const after = s.powerCut();
    expect(await contentOf(after, 'a')).toEqual(bytes(8192, 5));
  });

  it('a shrink then a grow reads zeros in between, before and after the sync', async () => {
    const s = new MemoryStorage();
    const f = await s.open('a', { create: true });
    await f.write(bytes(8192, 5), 0, 8192, 0);
    await f.truncate(100);
    await f.truncate(8192);
    const expected = Buffer.concat([bytes(100, 5), bytes(8092, 0)]);
    expect(await contentOf(s, 'a')).toEqual(expected);
    await f.datasync();
    await s.syncDir();
    expect(await contentOf(s.powerCut(), 'a')).toEqual(expected);
  });

  it('a power-cut policy decides per sector what of an unsynced write reached the medium', async () => {
    const s = new MemoryStorage();
    const f = await s.open('a', { create: true });
    await f.truncate(4 * SECTOR_BYTES);
    await f.datasync();
    await s.syncDir();
    await f.write(bytes(4 * SECTOR_BYTES - 100, 9), 0, 4 * SECTOR_BYTES - 100, 50);
    const offered: Array<[number, number, number, number]> = [];
    const policy: PowerCutPolicy = {
      write: (_name, position, length, first, sectors) => {
        offered.push([position, length, first, sectors]);
        return [true, false, false, true];
      },
      truncate: () => true,
    };
    const after = s.powerCut(policy);
    expect(offered).toEqual([[50, 4 * SECTOR_BYTES - 100, 0, 4]]);
    const got = (await contentOf(after, 'a'))!;
    const expected = Buffer.alloc(4 * SECTOR_BYTES);
    expected.fill(9, 50, SECTOR_BYTES);
    expected.fill(9, 3 * SECTOR_BYTES, 4 * SECTOR_BYTES - 50);
    expect(got).toEqual(expected);
  });

  it('corrupt() damages the medium and what reads see, except under unsynced writes', async () => {
    const s = new MemoryStorage();
    const f = await s.open('a', { create: true });
    await f.write(bytes(8192, 1), 0, 8192, 0);
    await f.datasync();
    await s.syncDir();
    await f.write(bytes(10, 2), 0, 10, 4096); // unsynced, covers bytes 4096..4105
    const mask = Buffer.alloc(8192);
    mask[0] = 0xff;
    mask[4096] = 0xff;
    s.corrupt('a', 0, mask);
    const seen = (await contentOf(s, 'a'))!;
    expect(seen[0]).toBe(1 ^ 0xff);
    expect(seen[4096]).toBe(2); // the page cache holds the newer copy
    expect(s.readDurable('a', 4096, 1)[0]).toBe(1 ^ 0xff);
    const after = (await contentOf(s.powerCut(), 'a'))!;
    expect(after[0]).toBe(1 ^ 0xff);
    expect(after[4096]).toBe(1 ^ 0xff);
  });

  it('dropDirty() keeps the page cache but no later datasync persists the dropped writes', async () => {
    const s = new MemoryStorage();
    const f = await s.open('a', { create: true });
    await f.truncate(8192);
    await f.datasync();
    await s.syncDir();
    await f.write(bytes(4096, 3), 0, 4096, 0);
    s.dropDirty('a');
    await f.write(bytes(4096, 4), 0, 4096, 4096);
    await f.datasync();
    expect(await contentOf(s, 'a')).toEqual(Buffer.concat([bytes(4096, 3), bytes(4096, 4)]));
    expect(await contentOf(s.powerCut(), 'a')).toEqual(Buffer.concat([bytes(4096, 0), bytes(4096, 4)]));
  });

  it('the fault hook sees the coarse and the exact operation', async () => {
    const s = new MemoryStorage();
    const seen: string[] = [];
    s.faultHook = (op, name, exact) => {
      seen.push(`${op}:${exact}:${name}`);
      return exact === 'truncate' ? new EngineError('NO_SPACE', 'full') : undefined;
    };
    const f = await s.open('a', { create: true });
    await f.write(bytes(1, 1), 0, 1, 0);
    await expect(f.truncate(10)).rejects.toMatchObject({ code: 'NO_SPACE' });
    await s.syncDir();
    await s.remove('a');
    expect(seen).toEqual(['open:open:a', 'write:pwrite:a', 'write:truncate:a', 'datasync:syncDir:.', 'rename:remove:a']);
  });

  it('a storage is dead after its power cut', async () => {
    const s = new MemoryStorage();
    const f = await s.open('a', { create: true });
    s.powerCut();
    await expect(f.write(bytes(1, 1), 0, 1, 0)).rejects.toMatchObject({ code: 'IO_ERROR' });
  });
});
