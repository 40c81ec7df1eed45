import { describe, expect, it } from 'vitest';
import { SECTOR_BYTES } from './memory-storage.ts';
import { SimDisk } from './sim-disk.ts';
import { SimRandom } from './sim-disk-prng.ts';

const SECTORS = 64;

/** A file of SECTORS zero sectors, synced, then overwritten (unsynced) with 0xab. */
async function diskWithUnsyncedWrite(seed: number): Promise<SimDisk> {
  const disk = new SimDisk(seed);
  const f = await disk.open('f', { create: true });
  await f.truncate(SECTORS * SECTOR_BYTES);
  await f.datasync();
  await disk.syncDir();
  await f.write(Buffer.alloc(SECTORS * SECTOR_BYTES, 0xab), 0, SECTORS * SECTOR_BYTES, 0);
  return disk;
}

/** Per sector: 'n' new, 'o' old; throws on a sector that is neither (torn inside a sector). */
function sectorMap(content: Buffer): string {
  let out = '';
  for (let s = 0; s < SECTORS; s++) {
    const sector = content.subarray(s * SECTOR_BYTES, (s + 1) * SECTOR_BYTES);
    if (sector.every((b) => b === 0xab)) out += 'n';
    else if (sector.every((b) => b === 0)) out += 'o';
    else throw new Error(`sector ${s} is torn inside`);
  }
  return out;
}

describe('SimRandom', () => {
  it('replays the same stream from the same seed and differs across seeds', () => {
    const draw = (seed: number) => Array.from({ length: 8 }, () => new SimRandom(seed)).map((r) => r.nextUint32());
    const a = new SimRandom(42);
    const b = new SimRandom(42);
    const c = new SimRandom(43);
    const sa = Array.from({ length: 100 }, () => a.nextUint32());
    expect(Array.from({ length: 100 }, () => b.nextUint32())).toEqual(sa);
    expect(Array.from({ length: 100 }, () => c.nextUint32())).not.toEqual(sa);
    expect(new Set(draw(7)).size).toBe(1);
    expect(new SimRandom(2 ** 52 + 5).nextUint32()).not.toBe(new SimRandom(5).nextUint32());
  });

  it('int() stays in range and covers it', () => {
    const r = new SimRandom(1);
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const v = r.int(7);
      expect(v).toBeGreaterThanOrEqual(0);
      expect(v).toBeLessThan(7);
      seen.add(v);
    }
    expect(seen.size).toBe(7);
  });
});

describe('SimDisk power cuts', () => {
  it('without tearing, loses every unsynced write', async () => {
    const disk = await diskWithUnsyncedWrite(1);
    const after = disk.powerCut();
    expect(sectorMap((await after.readFile('f'))!)).toBe('o'.repeat(SECTORS));
    expect(after.counters.unsyncedLost).toBe(1);
  });

  it('tearing keeps, loses or tears each unsynced write at 512-byte boundaries only', async () => {
    const outcomes = new Set<string>();
    for (let seed = 0; seed < 60; seed++) {
      const after = (await diskWithUnsyncedWrite(seed)).powerCut({ tear: true });
      const map = sectorMap((await after.readFile('f'))!); // throws if a sector is torn inside
      outcomes.add(map === 'n'.repeat(SECTORS) ? 'kept' : map === 'o'.repeat(SECTORS) ? 'lost' : 'torn');
      const c = after.counters;
      expect(c.unsyncedKept + c.unsyncedLost + c.unsyncedTorn).toBe(1);
      if (c.unsyncedTorn === 1) expect(map).toMatch(/n.*o|o.*n/);
    }
    expect([...outcomes].sort()).toEqual(['kept', 'lost', 'torn']);
  });

  it('never tears or loses synced data', async () => {
    for (let seed = 0; seed < 20; seed++) {
      const disk = await diskWithUnsyncedWrite(seed);
      const f = await disk.open('f', { create: false });
      await f.datasync();
      const after = disk.powerCut({ tear: true });
      expect(sectorMap((await after.readFile('f'))!)).toBe('n'.repeat(SECTORS));
    }
  });

  it('the same seed tears the same way', async () => {
    const run = async (seed: number) => {
      const disk = await diskWithUnsyncedWrite(seed);
      const f = await disk.open('f', { create: false });
      await f.write(Buffer.alloc(3072, 0xab), 0, 3072, 10_240);
      return sectorMap((await disk.powerCut({ tear: true }).readFile('f'))!);
    };
    for (const seed of [3, 99, 12345]) expect(await run(seed)).toBe(await run(seed));
    const maps = new Set<string>();
    for (let seed = 0; seed < 10; seed++) maps.add(await run(seed));
    expect(maps.size).toBeGreaterThan(1);
  });

  it('an old view fails every call after a power cut or a process restart', async () => {
    const disk = await diskWithUnsyncedWrite(5);
    const f = await disk.open('f', { create: false });
    const next = disk.processRestart();
    await expect(f.write(Buffer.alloc(1), 0, 1, 0)).rejects.toMatchObject({ code: 'IO_ERROR' });
    await expect(disk.syncDir()).rejects.toMatchObject({ code: 'IO_ERROR' });
    // A process restart keeps the page cache: the unsynced write is still readable.
    expect(sectorMap((await next.readFile('f'))!)).toBe('n'.repeat(SECTORS));
    const rebooted = next.powerCut();
    await expect(next.readFile('f')).rejects.toMatchObject({ code: 'IO_ERROR' });
    expect(sectorMap((await rebooted.readFile('f'))!)).toBe('o'.repeat(SECTORS));
    expect(rebooted.counters.processRestarts).toBe(1);
    expect(rebooted.counters.powerCuts).toBe(1);
  });
});

describe('SimDisk faults', () => {
  async function opsOn(disk: SimDisk, n: number): Promise<string[]> {
    const f = await disk.open('segment-1.log', { create: true });
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      try {
        await f.write(Buffer.alloc(512, i), 0, 512, i * 512);
        out.push('ok');
      } catch (err) {
        out.push((err as { code: string }).code);
      }
    }
    return out;
  }

  it('an nth rule fires on exactly the nth matching operation', async () => {
    const disk = new SimDisk(1);
    const fault = disk.addFault({ ops: ['pwrite'], name: /^segment-/, nth: 3, code: 'IO_ERROR' });
    expect(await opsOn(disk, 6)).toEqual(['ok', 'ok', 'IO_ERROR', 'ok', 'ok', 'ok']);
    expect(fault.fired).toBe(1);
    expect(fault.seen).toBe(6);
    expect(fault.firings[0]).toEqual({ op: 'pwrite', name: 'segment-1.log', code: 'IO_ERROR' });
    expect(disk.counters.injectedIoErrors).toBe(1);
  });

  it('`times` makes a rule fire repeatedly from the nth on', async () => {
    const disk = new SimDisk(1);
    disk.addFault({ ops: ['pwrite'], nth: 2, times: 3, code: 'NO_SPACE' });
    expect(await opsOn(disk, 6)).toEqual(['ok', 'NO_SPACE', 'NO_SPACE', 'NO_SPACE', 'ok', 'ok']);
    expect(disk.counters.injectedNoSpace).toBe(3);
  });

  it('rules match by operation kind and by file name', async () => {
    const disk = new SimDisk(1);
    const other = disk.addFault({ ops: ['pwrite'], name: /^pool\.json/, code: 'IO_ERROR' });
    const sync = disk.addFault({ ops: ['fdatasync'], code: 'IO_ERROR' });
    expect(await opsOn(disk, 3)).toEqual(['ok', 'ok', 'ok']);
    expect(other.seen).toBe(0);
    const f = await disk.open('segment-1.log', { create: false });
    await expect(f.datasync()).rejects.toMatchObject({ code: 'IO_ERROR' });
    await f.datasync(); // fired once, exhausted
    expect(sync.fired).toBe(1);
    const p = await disk.open('pool.json.tmp', { create: true });
    await expect(p.write(Buffer.alloc(3), 0, 3, 0)).rejects.toMatchObject({ code: 'IO_ERROR' });
  });

  it('probability rules fire as seeded, the same way for the same seed', async () => {
    const run = async (seed: number) => {
      const disk = new SimDisk(seed);
      disk.addFault({ ops: ['pwrite'], probability: 0.3, code: 'IO_ERROR' });
      return (await opsOn(disk, 200)).join(',');
    };
    const a = await run(11);
    expect(await run(11)).toBe(a);
    expect(await run(12)).not.toBe(a);
    const fired = a.split(',').filter((x) => x === 'IO_ERROR').length;
    expect(fired).toBeGreaterThan(30);
    expect(fired).toBeLessThan(100);
  });

  it('a dirty-dropping fdatasync failure loses the writes at the next power cut despite a later sync', async () => {
    const disk = await diskWithUnsyncedWrite(1);
    disk.addFault({ ops: ['fdatasync'], code: 'IO_ERROR', dropsDirtyData: true });
    const f = await disk.open('f', { create: false });
    await expect(f.datasync()).rejects.toMatchObject({ code: 'IO_ERROR' });
    await f.datasync();
    expect(sectorMap((await disk.readFile('f'))!)).toBe('n'.repeat(SECTORS));
    expect(sectorMap((await disk.powerCut().readFile('f'))!)).toBe('o'.repeat(SECTORS));
  });

  it('a crash point lets exactly n operations through, then fails everything until the power cut', async () => {
    const disk = new SimDisk(1);
    disk.crashAfter(2);
    expect(await opsOn(disk, 4)).toEqual(['ok', 'IO_ERROR', 'IO_ERROR', 'IO_ERROR']); // open was the first
    expect(disk.crashed).toBe(true);
    const after = disk.powerCut();
    expect(after.crashed).toBe(false);
    expect(after.counters.crashes).toBe(1);
    await (await after.open('x', { create: true })).datasync();
  });
});

describe('SimDisk corruption', () => {
  it('flips bytes of the chosen block only, on the medium and in what reads see', async () => {
    const disk = new SimDisk(8);
    const f = await disk.open('segment-1.log', { create: true });
    await f.write(Buffer.alloc(4 * 4096, 0x11), 0, 4 * 4096, 0);
    await f.datasync();
    await disk.syncDir();
    const c = disk.corruptBlock('segment-1.log', 2);
    expect(c.position).toBe(8192);
    expect(c.original).toEqual(Buffer.alloc(4096, 0x11));
    expect(c.corrupted.equals(c.original)).toBe(false);
    const seen = (await disk.readFile('segment-1.log'))!;
    expect(seen.subarray(0, 8192).every((b) => b === 0x11)).toBe(true);
    expect(seen.subarray(12288).every((b) => b === 0x11)).toBe(true);
    expect(seen.subarray(8192, 12288)).toEqual(c.corrupted);
    expect((await disk.powerCut().readFile('segment-1.log'))!.subarray(8192, 12288)).toEqual(c.corrupted);
    expect(disk.counters.corruptions).toBe(1);
    expect(() => disk.corruptBlock('segment-1.log', 4)).toThrow(RangeError);
  });

  it('the same seed damages the same bytes', async () => {
    const damage = async (seed: number) => {
      const disk = new SimDisk(seed);
      const f = await disk.open('a', { create: true });
      await f.write(Buffer.alloc(4096), 0, 4096, 0);
      await f.datasync();
      return disk.corruptBlock('a', 0).corrupted.toString('hex');
    };
    expect(await damage(5)).toBe(await damage(5));
    expect(await damage(5)).not.toBe(await damage(6));
  });
});
