/**
 * The newc writer against GNU cpio as the independent reader: the listing shows every entry's
 * type, mode, size and link target, and extraction to stdout gives back each file's bytes.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { buildCpioNewc } from './cpio-newc.ts';

function cpio(args: string[], archive: Buffer): string {
  return execFileSync('cpio', ['--quiet', ...args], { input: archive, encoding: 'latin1' });
}

describe('buildCpioNewc', () => {
  // Sizes 0..5 cover every padding remainder of names and data.
  const files = [0, 1, 2, 3, 4, 5, 4097].map((n) => ({ path: `d/f${n}`, data: Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + n) & 0xff)) }));
  const archive = buildCpioNewc([
    { kind: 'dir', path: 'd' },
    { kind: 'dir', path: '/d/sub', mode: 0o700 },
    ...files.map((f) => ({ kind: 'file' as const, path: f.path, data: f.data })),
    { kind: 'file', path: 'init', data: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
    { kind: 'symlink', path: 'd/link', target: '../init' },
    { kind: 'chardev', path: 'd/console', major: 5, minor: 1 },
  ]);

  it('lists every entry with its type, mode, size and target', () => {
    const listing = cpio(['-itv', '--numeric-uid-gid'], archive)
      .trim()
      .split('\n')
      .map((line) => {
        const f = line.trim().split(/\s+/);
        // perms links uid gid size month day year name [-> target]; a device has "major, minor"
        // where the size goes.
        if (f[0]!.startsWith('c')) return `${f[0]} ${f[4]}${f[5]} ${f.slice(9).join(' ')}`;
        return `${f[0]} ${f[4]} ${f.slice(8).join(' ')}`;
      });
    expect(listing).toEqual([
      'drwxr-xr-x 0 d',
      'drwx------ 0 d/sub',
      ...files.map((f) => `-rw-r--r-- ${f.data.length} ${f.path}`),
      '-rwxr-xr-x 10 init',
      'lrwxrwxrwx 7 d/link -> ../init',
      'crw------- 5,1 d/console',
    ]);
  });

  it('gives back each file byte for byte', () => {
    for (const f of files) expect(Buffer.from(cpio(['-i', '--to-stdout', f.path], archive), 'latin1').equals(f.data), f.path).toBe(true);
  });

  it('ends with the trailer, padded to a multiple of 4', () => {
    expect(archive.length % 4).toBe(0);
    expect(archive.subarray(-16).toString('latin1')).toContain('TRAILER!!!');
  });

  it('refuses a field that does not fit in 8 hex digits', () => {
    expect(() => buildCpioNewc([{ kind: 'chardev', path: 'x', major: 2 ** 32, minor: 0 }])).toThrow(/out of range/);
  });
});
