import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { exitError, fakeExec } from './attach/fake-exec.ts';
import { exportSize, parseExportList } from './node-export.ts';

let dir: string;
let server: Server | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-node-export-'));
});

afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
  await rm(dir, { recursive: true, force: true });
});

async function listen(path: string): Promise<void> {
  server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server!.listen(path, resolve));
}

const LIST = JSON.stringify({ protocol: 'newstyle-fixed', exports: [{ 'export-name': 'vol1', 'export-size': 4096 }, { 'export-name': 'snap1' }] });

describe('exportSize', () => {
  it('is the size nbdinfo reports', async () => {
    const exec = fakeExec(() => '67108864\n');
    expect(await exportSize('vol1', '/run/nbd.sock', exec)).toBe(64 * 2 ** 20);
    expect(exec.calls).toEqual([{ file: 'nbdinfo', args: ['--size', 'nbd+unix:///vol1?socket=/run/nbd.sock'] }]);
  });

  it('is undefined when the engine answers and does not list the export', async () => {
    const socket = join(dir, 'nbd.sock');
    await listen(socket);
    const exec = fakeExec((file, args) => (args[0] === '--size' ? exitError(file, args, 1) : LIST));
    expect(await exportSize('vol2', socket, exec)).toBeUndefined();
    // Listed, yet the size failed: that failure is reported as it is.
    await expect(exportSize('vol1', socket, exec)).rejects.toThrow(/cannot read the size/);
  });

  it('is FAILED_PRECONDITION when nothing answers on the socket', async () => {
    const exec = fakeExec((file, args) => exitError(file, args, 1));
    await expect(exportSize('vol1', join(dir, 'absent.sock'), exec)).rejects.toMatchObject({ code: status.FAILED_PRECONDITION });
  });

  it('parses the export list', () => {
    expect(parseExportList(LIST)).toEqual(['vol1', 'snap1']);
    expect(parseExportList('{}')).toEqual([]);
  });
});
