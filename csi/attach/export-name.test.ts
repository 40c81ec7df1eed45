import { describe, expect, it } from 'vitest';
import { checkExportName, nbdUnixUri } from './export-name.ts';

describe('checkExportName', () => {
  it.each(['vm1', 'a', 'pvc-0b1c.disk_2', 'A1', 'x'.repeat(128)])('accepts %s', (name) => {
    expect(() => checkExportName(name)).not.toThrow();
  });

  it.each(['', '.', '..', '.hidden', '-x', 'a/b', '../etc', 'a b', 'x'.repeat(129), 'a\0b', 'é'])('refuses %j', (name) => {
    expect(() => checkExportName(name)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('nbdUnixUri', () => {
  it('is the standard nbd+unix URI', () => {
    expect(nbdUnixUri('vm1', '/var/lib/braid/nbd.sock')).toBe('nbd+unix:///vm1?socket=/var/lib/braid/nbd.sock');
  });

  it('percent-encodes what a URI cannot carry in the socket path', () => {
    expect(nbdUnixUri('vm1', '/tmp/a b/s&#?.sock')).toBe('nbd+unix:///vm1?socket=/tmp/a%20b/s%26%23%3F.sock');
  });
});
