/**
 * Kernel NBD cannot run on a kernel without the nbd module (our CI), so these tests check what
 * the attacher would do: the nbd-client commands, how it picks a device from a fake sysfs
 * tree, and how it reads nbd-client's documented exit statuses.
 */
import { writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ExecError } from './exec.ts';
import { exitError, fakeExec } from './fake-exec.ts';
import { NbdAttacher, nbdCheckArgs, nbdConnectArgs, nbdDisconnectArgs, nbdSupport, sortNbdNames } from './nbd-attacher.ts';
import { readState, writeState } from './state-file.ts';

let root: string;
let sysfs: string;
let stateDir: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'braid-nbd-'));
  sysfs = join(root, 'sys');
  stateDir = join(root, 'state');
  await mkdir(join(sysfs, 'block'), { recursive: true });
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Fake /sys/block/nbdN; `connected` ones have a pid file. */
async function fakeNbd(name: string, connected: boolean): Promise<void> {
  await mkdir(join(sysfs, 'block', name), { recursive: true });
  if (connected) await writeFile(join(sysfs, 'block', name, 'pid'), '123\n');
}

describe('nbd-client commands', () => {
  it('connects over the unix socket with the export name', () => {
    expect(nbdConnectArgs('/p/nbd.sock', 'vm1', '/dev/nbd3')).toEqual(['-unix', '/p/nbd.sock', '/dev/nbd3', '-name', 'vm1']);
  });

  it('disconnects and checks', () => {
    expect(nbdDisconnectArgs('/dev/nbd3')).toEqual(['-d', '/dev/nbd3']);
    expect(nbdCheckArgs('/dev/nbd3')).toEqual(['-c', '/dev/nbd3']);
  });

  it('orders devices numerically and ignores non-nbd names', () => {
    expect(sortNbdNames(['nbd10', 'loop0', 'nbd2', 'nbd0', 'nbd1p1', 'sda'])).toEqual(['nbd0', 'nbd2', 'nbd10']);
  });
});

describe('nbdSupport', () => {
  it('is unsupported, with a reason, when no module appears after modprobe', async () => {
    const exec = fakeExec(() => '');
    const support = await nbdSupport(exec, sysfs);
    expect(support.supported).toBe(false);
    expect(support.reason).toMatch(/no nbd module/);
    expect(exec.calls[0]).toEqual({ file: 'modprobe', args: ['nbd'] });
  });

  it('is unsupported when nbd-client is missing', async () => {
    await mkdir(join(sysfs, 'module', 'nbd'), { recursive: true });
    const missing = new ExecError({ code: 'EXEC_NOT_FOUND', file: 'nbd-client', args: ['-V'], exitCode: null, signal: null, stdout: '', stderr: '' });
    const support = await nbdSupport(fakeExec(() => missing), sysfs);
    expect(support).toEqual({ supported: false, reason: 'nbd-client is not installed' });
  });

  it('is supported with the module loaded and nbd-client present (whatever -V exits with)', async () => {
    await mkdir(join(sysfs, 'module', 'nbd'), { recursive: true });
    const exec = fakeExec((file, args) => exitError(file, args, 1));
    expect((await nbdSupport(exec, sysfs)).supported).toBe(true);
    expect(exec.calls.map((c) => c.file)).toEqual(['nbd-client']);
  });
});

describe('NbdAttacher', () => {
  const req = (): { exportName: string; socketPath: string; stateDir: string } => ({ exportName: 'vm1', socketPath: '/p/nbd.sock', stateDir });

  it('connects the first free device and records it', async () => {
    await fakeNbd('nbd0', true);
    await fakeNbd('nbd1', false);
    await fakeNbd('nbd2', false);
    const exec = fakeExec(() => '');
    const attacher = new NbdAttacher({ exec, sysfs });
    expect(await attacher.attach(req())).toEqual({ devicePath: '/dev/nbd1' });
    expect(exec.calls).toEqual([{ file: 'nbd-client', args: ['-unix', '/p/nbd.sock', '/dev/nbd1', '-name', 'vm1'] }]);
    expect(await readState(stateDir, 'vm1')).toEqual({ version: 1, kind: 'nbd', exportName: 'vm1', socketPath: '/p/nbd.sock', devicePath: '/dev/nbd1' });
  });

  it('moves on to the next device when another attacher took the one it picked', async () => {
    await fakeNbd('nbd0', false);
    await fakeNbd('nbd1', false);
    const exec = fakeExec((file, args) => {
      if (args.includes('/dev/nbd0')) {
        // Someone else connected nbd0 between our look and our connect.
        writeFileSync(join(sysfs, 'block', 'nbd0', 'pid'), '99\n');
        return exitError(file, args, 1, 'Device or resource busy');
      }
      return '';
    });
    const attacher = new NbdAttacher({ exec, sysfs });
    const attached = await attacher.attach(req());
    expect(attached).toEqual({ devicePath: '/dev/nbd1' });
  });

  it('reports a connect failure on a device that stayed free', async () => {
    await fakeNbd('nbd0', false);
    const exec = fakeExec((file, args) => exitError(file, args, 1, 'Negotiation failed'));
    await expect(new NbdAttacher({ exec, sysfs }).attach(req())).rejects.toMatchObject({ code: 'ATTACH_FAILED' });
    expect(await readState(stateDir, 'vm1')).toBeUndefined();
  });

  it('reports NO_FREE_DEVICE when every device is connected', async () => {
    await fakeNbd('nbd0', true);
    await expect(new NbdAttacher({ exec: fakeExec(() => ''), sysfs }).attach(req())).rejects.toMatchObject({ code: 'NO_FREE_DEVICE' });
  });

  it('returns the recorded device while nbd-client -c says it is connected', async () => {
    await writeState(stateDir, { version: 1, kind: 'nbd', exportName: 'vm1', socketPath: '/p/nbd.sock', devicePath: '/dev/nbd5' });
    const exec = fakeExec(() => '4242\n');
    const attacher = new NbdAttacher({ exec, sysfs });
    expect(await attacher.attach(req())).toEqual({ devicePath: '/dev/nbd5' });
    expect(await attacher.find('vm1', stateDir)).toEqual({ devicePath: '/dev/nbd5' });
    expect(exec.calls.every((c) => c.args[0] === '-c' && c.args[1] === '/dev/nbd5')).toBe(true);
  });

  it('reads exit 1 of nbd-client -c as "not connected" and exit 2 as an error', async () => {
    await writeState(stateDir, { version: 1, kind: 'nbd', exportName: 'vm1', socketPath: '/p/nbd.sock', devicePath: '/dev/nbd5' });
    const notConnected = new NbdAttacher({ exec: fakeExec((f, a) => exitError(f, a, 1)), sysfs });
    expect(await notConnected.find('vm1', stateDir)).toBeUndefined();
    const broken = new NbdAttacher({ exec: fakeExec((f, a) => exitError(f, a, 2)), sysfs });
    await expect(broken.find('vm1', stateDir)).rejects.toMatchObject({ code: 'ATTACH_FAILED' });
  });

  it('detaching a device that is no longer connected only forgets it; detaching again is fine', async () => {
    await writeState(stateDir, { version: 1, kind: 'nbd', exportName: 'vm1', socketPath: '/p/nbd.sock', devicePath: '/dev/nbd5' });
    const exec = fakeExec((f, a) => exitError(f, a, 1));
    const attacher = new NbdAttacher({ exec, sysfs });
    await attacher.detach({ exportName: 'vm1', stateDir });
    await attacher.detach({ exportName: 'vm1', stateDir });
    expect(await readState(stateDir, 'vm1')).toBeUndefined();
    expect(exec.calls.some((c) => c.args[0] === '-d')).toBe(false);
  });

  it('refuses a record written by the nbdfuse attacher', async () => {
    await writeState(stateDir, { version: 1, kind: 'nbdfuse', exportName: 'vm1', socketPath: '/p', mountDir: '/s/fuse-vm1', pid: 1, loopDevice: null });
    await expect(new NbdAttacher({ exec: fakeExec(() => ''), sysfs }).find('vm1', stateDir)).rejects.toMatchObject({ code: 'STATE_CORRUPT' });
  });
});
