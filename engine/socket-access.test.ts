import { mkdtemp, rm, stat, mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { applySocketAccess, parseSocketMode, resolveGroup, shareDirectoryWithGroup, withPrivateUmask } from './socket-access.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-sock-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function currentUmask(): number {
  const mask = process.umask(0);
  process.umask(mask);
  return mask;
}

function listen(path: string): Promise<() => Promise<void>> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve(() => new Promise<void>((r) => server.close(() => r()))));
  });
}

describe('withPrivateUmask', () => {
  it('binds a socket owner-only even under umask 0, and restores the umask after', async () => {
    const before = process.umask(0);
    try {
      const close = await withPrivateUmask(() => listen(join(dir, 'a.sock')));
      expect((await stat(join(dir, 'a.sock'))).mode & 0o777).toBe(0o700);
      expect(process.umask(0)).toBe(0); // restored to what it was: 0
      await close();
      // Without it, the same bind is open to everyone: what the wrapper prevents.
      const open = await listen(join(dir, 'b.sock'));
      expect((await stat(join(dir, 'b.sock'))).mode & 0o777).toBe(0o777);
      await open();
    } finally {
      process.umask(before);
    }
  });

  it('keeps a stricter umask than its own, nests, and restores after a failure', async () => {
    const before = process.umask(0o027);
    try {
      await withPrivateUmask(async () => {
        expect(currentUmask()).toBe(0o077);
        await withPrivateUmask(async () => undefined);
        expect(currentUmask()).toBe(0o077); // the inner scope did not restore early
      });
      await expect(withPrivateUmask(() => Promise.reject(new Error('bind failed')))).rejects.toThrow('bind failed');
      expect(currentUmask()).toBe(0o027);
    } finally {
      process.umask(before);
    }
  });
});

describe('applySocketAccess', () => {
  it('sets the group, then the mode', async () => {
    const path = join(dir, 's.sock');
    const close = await withPrivateUmask(() => listen(path));
    try {
      const gid = process.getgid!();
      await applySocketAccess(path, { mode: 0o660, gid });
      const st = await stat(path);
      expect(st.mode & 0o777).toBe(0o660);
      expect(st.gid).toBe(gid);
      await applySocketAccess(path, { mode: 0o600 });
      expect((await stat(path)).mode & 0o777).toBe(0o600);
    } finally {
      await close();
    }
  });

  it('fails with a clear error on a missing socket', async () => {
    await expect(applySocketAccess(join(dir, 'none.sock'), { mode: 0o600 })).rejects.toMatchObject({
      code: 'FAILED_PRECONDITION',
      message: expect.stringMatching(/cannot set the owner group or mode of .*none\.sock: .*ENOENT/),
    });
  });
});

describe('shareDirectoryWithGroup', () => {
  it('gives the group search (not list) permission and keeps the other bits', async () => {
    const pool = join(dir, 'pool');
    await mkdir(pool, { mode: 0o700 });
    const gid = process.getgid!();
    await shareDirectoryWithGroup(pool, gid);
    const st = await stat(pool);
    expect(st.mode & 0o777).toBe(0o710);
    expect(st.gid).toBe(gid);
  });
});

describe('parseSocketMode', () => {
  it('takes three octal digits with or without a leading 0', () => {
    expect(parseSocketMode('0600')).toBe(0o600);
    expect(parseSocketMode('660')).toBe(0o660);
    expect(parseSocketMode('0666')).toBe(0o666);
  });

  it('refuses what is not a mode, special bits, and modes that lock the owner out', () => {
    for (const bad of ['', '600x', '0o660', '0888', '4660', '06600', '-600', ' 600', '0400', '0200', '0060']) {
      expect(() => parseSocketMode(bad), bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });
});

describe('resolveGroup', () => {
  const groups = new Map([['kvm', 36], ['braid-users', 1001]]);
  const lookup = async (name: string): Promise<number | undefined> => groups.get(name);

  it('takes a gid as is and looks a name up', async () => {
    expect(await resolveGroup('1234', lookup)).toBe(1234);
    expect(await resolveGroup('0', lookup)).toBe(0);
    expect(await resolveGroup('kvm', lookup)).toBe(36);
    expect(await resolveGroup('braid-users', lookup)).toBe(1001);
  });

  it('says which group is unknown, and refuses names that are not group names', async () => {
    await expect(resolveGroup('nosuch', lookup)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: 'unknown group "nosuch": no such group on this system' });
    for (const bad of ['', '../etc', 'a b', 'x\n', '-rf', '99999999999']) {
      await expect(resolveGroup(bad, lookup), bad).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
  });

  it('asks the system (getent) by default', async () => {
    expect(await resolveGroup('root')).toBe(0);
    await expect(resolveGroup('braid-no-such-group')).rejects.toMatchObject({ message: expect.stringMatching(/^unknown group/) });
  });
});
