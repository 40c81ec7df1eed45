import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { extractJson, jobFileText, nbdJobs, parseFioJson } from './fio.ts';

// A real run: fio 3.33, nbd engine, 2 jobs against nbdkit's memory plugin, 1 s of 4 KiB random
// writes with fsync=1 and group_reporting (job file beside it). Its stdout starts with the nbd
// engine's "fio: connected to NBD server" lines, as every real run's does.
const fixture = readFileSync(join(import.meta.dirname, 'fixtures', 'fio-nbd-randwrite-fsync.out'), 'utf8');

describe('parseFioJson', () => {
  it('reads IOPS, counts, bytes and runtime of a real nbd run', () => {
    const r = parseFioJson(fixture);
    expect(r.write.iops).toBeCloseTo(21888.11, 1);
    expect(r.write.totalIos).toBe(21910);
    expect(r.write.ioBytes).toBe(89743360);
    expect(r.write.runtimeMs).toBe(1001);
    expect(r.read.totalIos).toBe(0);
    expect(r.read.clat).toBeUndefined();
    expect(r.errors).toEqual([]);
  });

  it('turns completion latency percentiles from ns into µs', () => {
    const r = parseFioJson(fixture);
    expect(r.write.clat?.p50Us).toBeCloseTo(36.608, 3);
    expect(r.write.clat?.p99Us).toBeCloseTo(100.864, 3);
  });

  it('reports the flushes fsync=1 issued, one per write', () => {
    const r = parseFioJson(fixture);
    expect(r.syncTotalIos).toBe(21908);
    expect(r.sync?.p50Us).toBeCloseTo(27.52, 2);
    expect(r.sync?.p99Us).toBeCloseTo(69.12, 2);
  });

  it('skips the lines the nbd engine prints before the JSON', () => {
    expect(fixture.startsWith('fio: connected')).toBe(true);
    expect(extractJson(fixture).startsWith('{')).toBe(true);
    expect(extractJson('{"jobs":[]}')).toBe('{"jobs":[]}');
    expect(() => extractJson('fio: no json here')).toThrow(/no JSON/);
  });

  it('rejects a document without jobs', () => {
    expect(() => parseFioJson('{"jobs":[]}')).toThrow(/no jobs/);
  });
});

describe('jobFileText', () => {
  it('writes a global section and one section per VM with its own uri', () => {
    const uris = new Map([
      ['vm0', 'nbd+unix:///vm0?socket=/s/nbd.sock'],
      ['vm1', 'nbd+unix:///vm1?socket=/s/nbd.sock'],
    ]);
    const text = jobFileText({ ioengine: 'nbd', rw: 'randwrite', bs: '4k', iodepth: 1, fsync: 1 }, nbdJobs(uris));
    expect(text).toBe(
      [
        '[global]',
        'ioengine=nbd',
        'rw=randwrite',
        'bs=4k',
        'iodepth=1',
        'fsync=1',
        '',
        '[vm0]',
        'uri=nbd+unix:///vm0?socket=/s/nbd.sock',
        '',
        '[vm1]',
        'uri=nbd+unix:///vm1?socket=/s/nbd.sock',
        '',
      ].join('\n'),
    );
  });

  it('refuses values that could inject options or sections', () => {
    expect(() => jobFileText({ filename: 'a\n[evil]' }, [{ name: 'j', options: {} }])).toThrow(/bad fio/);
    expect(() => jobFileText({}, [{ name: 'a]b', options: {} }])).toThrow(/bad fio/);
    expect(() => jobFileText({}, [])).toThrow(/at least one job/);
    expect(() => jobFileText({}, [{ name: 'a', options: {} }, { name: 'a', options: {} }])).toThrow(/unique/);
  });
});
