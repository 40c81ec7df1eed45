/**
 * Snapshots and clones end to end: a real `bin/braid serve` on a real pool in a temp directory,
 * the real CLI, and qemu-io as the NBD client. Checks what users rely on: a snapshot keeps the
 * data of its instant and refuses writes, clones of a snapshot and of a volume see that data
 * and diverge on their own, and removing the snapshot or the source volume leaves clones whole.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { execRun, startServe, useTempPool, type Run, type Served } from '../test/fixtures/serve-process.ts';
import { NBD_CMD_DISC, NBD_CMD_WRITE, NBD_EPERM, NBD_FLAG_READ_ONLY } from '../engine/nbd/protocol.ts';
import { openExport, readSimpleReply, request } from '../engine/nbd/test-support.ts';

const BRAID = fileURLToPath(new URL('../bin/braid', import.meta.url));
const MiB = 2 ** 20;

const pool = useTempPool('braid-snap-');

/** Starts `bin/braid serve --data DIR` and resolves once it logged its ready line. */
function serve(): Promise<Served> {
  return startServe(BRAID, ['serve', '--data', pool()]);
}


function braid(args: string[]): Promise<Run> {
  return execRun(BRAID, [...args, '--data', pool()]);
}

/** qemu-io on an export of the pool; `-r` opens it read-only. */
function qemuIo(name: string, commands: string[], opts: { readOnly?: boolean } = {}): Promise<Run> {
  const uri = `nbd+unix:///${name}?socket=${join(pool(), 'nbd.sock')}`;
  return execRun('qemu-io', ['-f', 'raw', ...(opts.readOnly ? ['-r'] : []), ...commands.flatMap((c) => ['-c', c]), uri]);
}

/** Asserts that every read-and-verify command passes on a read-only open of the export. */
async function expectReads(name: string, commands: string[]): Promise<void> {
  const r = await qemuIo(name, commands, { readOnly: true });
  expect({ name, commands, ...r }).toMatchObject({ code: 0, stderr: '' });
  expect(r.stdout).not.toMatch(/Pattern verification failed|failed/i);
}

describe('snapshots and clones through a real braid serve', () => {
  it('snapshot, clone, diverge, refuse writes to the snapshot, and survive removals', async () => {
    const { child, exited } = await serve();

    expect(await braid(['volume', 'create', 'vm', '--size', '64M'])).toMatchObject({ code: 0, stderr: '' });
    expect(await qemuIo('vm', ['write -P 0xab 0 1M', 'flush'])).toMatchObject({ code: 0, stderr: '' });

    expect(await braid(['snapshot', 'create', 'vm', 'snap'])).toMatchObject({ code: 0, stderr: '' });
    expect(await braid(['snapshot', 'create', 'vm', 'keep'])).toMatchObject({ code: 0, stderr: '' });
    expect(await braid(['volume', 'clone', 'snap', 'c1'])).toMatchObject({ code: 0, stderr: '' });
    expect(await braid(['volume', 'clone', 'vm', 'c2'])).toMatchObject({ code: 0, stderr: '' });

    const listed = JSON.parse((await braid(['snapshot', 'ls', '--json'])).stdout) as unknown;
    const image = { sourceVolume: 'vm', sizeBytes: 64 * MiB, allocatedBytes: MiB, createdAt: expect.any(String) };
    expect(listed).toEqual({ snapshots: [{ name: 'keep', ...image }, { name: 'snap', ...image }] });
    const volumes = JSON.parse((await braid(['volume', 'ls', '--json'])).stdout) as { volumes: { name: string; sizeBytes: number }[] };
    expect(volumes.volumes.map((v) => [v.name, v.sizeBytes])).toEqual([
      ['c1', 64 * MiB],
      ['c2', 64 * MiB],
      ['vm', 64 * MiB],
    ]);

    expect(await qemuIo('c1', ['write -P 0xcd 0 4k', 'flush'])).toMatchObject({ code: 0, stderr: '' });

    await expectReads('snap', ['read -P 0xab 0 1M']);
    await expectReads('c2', ['read -P 0xab 0 1M']);
    await expectReads('c1', ['read -P 0xcd 0 4k', 'read -P 0xab 4k 1020k']);
    await expectReads('vm', ['read -P 0xab 0 1M']);
    // The checks can fail: c1's first block is no longer the snapshot's.
    expect((await qemuIo('c1', ['read -P 0xab 0 4k'], { readOnly: true })).code).not.toBe(0);

    // A snapshot is a read-only export: writes fail with EPERM. qemu-io reports the engine's
    // EPERM as "Operation not permitted"; once the export advertises NBD_FLAG_READ_ONLY (see
    // the test below) qemu-io refuses to open it for writing, "Permission denied" (EACCES).
    const write = await qemuIo('snap', ['write -P 0xee 0 4k']);
    expect(write.code).not.toBe(0);
    expect(write.stdout + write.stderr).toMatch(/Operation not permitted|Permission denied/);
    // A client that writes anyway gets EPERM from the engine itself.
    const raw = await openExport(join(pool(), 'nbd.sock'), 'snap');
    raw.client.write(request({ type: NBD_CMD_WRITE, handle: 7n, offset: 0, payload: Buffer.alloc(4096, 0xee) }));
    expect(await readSimpleReply(raw.client)).toEqual({ errno: NBD_EPERM, handle: 7n });
    raw.client.write(request({ type: NBD_CMD_DISC, handle: 8n }));
    await raw.client.closed;
    await expectReads('snap', ['read -P 0xab 0 1M']);

    expect(await braid(['snapshot', 'rm', 'snap'])).toEqual({ code: 0, stdout: 'removed snapshot "snap"\n', stderr: '' });
    expect(JSON.parse((await braid(['snapshot', 'ls', '--json'])).stdout)).toMatchObject({ snapshots: [{ name: 'keep' }] });
    await expectReads('c1', ['read -P 0xcd 0 4k', 'read -P 0xab 4k 1020k']);

    expect(await braid(['volume', 'rm', 'vm'])).toEqual({ code: 0, stdout: 'removed volume "vm"\n', stderr: '' });
    await expectReads('c2', ['read -P 0xab 0 1M']);
    await expectReads('c1', ['read -P 0xcd 0 4k', 'read -P 0xab 4k 1020k']);
    // A snapshot outlives its volume.
    await expectReads('keep', ['read -P 0xab 0 1M']);
    expect(JSON.parse((await braid(['snapshot', 'ls', '--json'])).stdout)).toMatchObject({ snapshots: [{ name: 'keep', sourceVolume: 'vm' }] });

    child.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
  });

  // Known engine bug, outside this change: engine/volume-handle.ts answers `readOnly` false for
  // every export, so a snapshot is not advertised read-only (writes are still refused, above).
  // When that is fixed this test fails: drop `.fails`.
  it('advertises a snapshot export as read-only (NBD_FLAG_READ_ONLY)', async () => {
    const { child, exited } = await serve();
    expect((await braid(['volume', 'create', 'vm', '--size', '1M'])).code).toBe(0);
    expect((await braid(['snapshot', 'create', 'vm', 'snap'])).code).toBe(0);
    const opened = await openExport(join(pool(), 'nbd.sock'), 'snap');
    const flags = opened.transmissionFlags;
    opened.client.write(request({ type: NBD_CMD_DISC, handle: 1n }));
    await opened.client.closed;
    child.kill('SIGTERM');
    await exited;
    expect(flags & NBD_FLAG_READ_ONLY).toBe(NBD_FLAG_READ_ONLY);
  });
});
