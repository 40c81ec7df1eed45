import { describe, expect, it } from 'vitest';
import { parseSize } from './main.ts';
import { nbdkitArgs, parseEngineStats, qemuNbdArgs } from './systems.ts';

describe('server arguments', () => {
  it('gives each per-file qemu-nbd its own socket, export and raw file, surviving fio probe connections', () => {
    expect(qemuNbdArgs('/d/vm0.sock', 'vm0', '/d/vm0.raw', 'writeback')).toEqual([
      '--format=raw',
      '--cache=writeback',
      '--aio=threads',
      '--persistent',
      '--shared=2',
      '--socket=/d/vm0.sock',
      '--export-name=vm0',
      '/d/vm0.raw',
    ]);
    expect(qemuNbdArgs('/s', 'v', '/f', 'none')).toContain('--aio=native');
  });

  it('serves a directory of files from one nbdkit', () => {
    expect(nbdkitArgs('/d/kit.sock', '/d/files')).toEqual(['--unix=/d/kit.sock', '--foreground', '--exit-with-parent', 'file', 'dir=/d/files']);
  });
});

describe('parseEngineStats', () => {
  it('picks the coalescing figures out of braid stats --json', () => {
    expect(parseEngineStats('{"logicalBytes":1,"writesPerBatch":12.5,"flushesPerFdatasync":9}')).toEqual({ writesPerBatch: 12.5, flushesPerFdatasync: 9 });
    expect(() => parseEngineStats('{"writesPerBatch":"x"}')).toThrow(/writesPerBatch/);
  });
});

describe('parseSize', () => {
  it('takes bytes or a binary suffix, like the braid CLI', () => {
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('256M')).toBe(256 * 2 ** 20);
    expect(parseSize('1g')).toBe(2 ** 30);
    expect(() => parseSize('1.5G')).toThrow(/bad size/);
    expect(() => parseSize('0')).toThrow(/bad size/);
  });
});
