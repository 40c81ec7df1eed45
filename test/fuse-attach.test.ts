/**
 * The fuse attacher for real: a running engine (`bin/braid serve`), braid-fuse serving the
 * export on a FUSE mount, a real /dev/loopN on its file, real mkfs.xfs / mount / xfs_growfs.
 * Needs root, /dev/fuse and loop devices (CI has them).
 *
 *   - attach is idempotent and survives a plugin restart; the volume grows ONLINE while
 *     mounted (braid volume resize, refresh, xfs_growfs), data intact;
 *   - the engine restarts (SIGTERM, then kill -9) under a writer that fsyncs every file: the
 *     writer sees no error, and every file whose fsync returned is intact afterwards, read back
 *     after a detach and a fresh attach (so from the engine, not from a cache);
 *   - an engine away longer than the reconnect timeout: I/O fails with EIO, find() reports the
 *     attachment unhealthy; once the engine is back, it heals by itself;
 *   - every test ends by detaching and proving nothing is left: no loop device on our file, no
 *     FUSE mount, no braid-fuse process, no state files.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, open, readdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FuseAttacher } from '../csi/attach/fuse-attacher.ts';
import { fuseLayout, isBraidFuseFor } from '../csi/attach/fuse/layout.ts';
import { findProcesses } from '../csi/attach/proc.ts';
import { deviceSizeBytes, filesystemStats, formatIfNeeded, growFilesystem } from '../csi/mount/filesystem.ts';
import { mount, unmount } from '../csi/mount/mount.ts';
import { MiB, qemuIo, runOk, sleep, useEngine, waitFor } from './harness.ts';
import { cleanUpDevicesUnder, liveDevices, readSums, sha256, writeFiles } from './lib/devices.ts';

const canRun = process.getuid?.() === 0 && existsSync('/dev/fuse') && existsSync('/dev/loop-control');
const why = canRun ? '' : ' (skipped: needs root, /dev/fuse and /dev/loop-control)';

const engine = useEngine();
let root: string;
let stateDir: string;

// Registered after useEngine's hooks, so it runs first: devices go before the engine does.
beforeAll(async () => {
  root = await realpath(await mkdtemp(join(tmpdir(), 'braid-fuse-attach-')));
  stateDir = join(root, 'state');
});
afterAll(async () => {
  if (!root) return;
  await cleanUpDevicesUnder(root);
  try {
    await cleanUpDevicesUnder(engine().dir); // `braid attach` keeps its state in DIR/attach
  } catch {
    // No engine: beforeAll failed before anything was attached there.
  }
  await rm(root, { recursive: true, force: true });
});

// ---- What is live, what is left, and tearing down what a failed test left -------------------

/** Everything of `exportName` still present: state files, loop devices, FUSE mount, braid-fuse processes. */
async function leftoversOf(exportName: string, dir = stateDir): Promise<string[]> {
  const layout = fuseLayout(dir, exportName);
  const found: string[] = [];
  const files = existsSync(dir) ? await readdir(dir) : [];
  for (const f of files) if (f.startsWith(`${exportName}.`) || f === `braid-fuse-${exportName}` || join(dir, f) === layout.controlSocket) found.push(`file ${f}`);
  const { mounts, loops } = await liveDevices();
  for (const l of loops) if (l.backingFile === layout.backingFile) found.push(`loop ${l.name}`);
  for (const m of mounts) if (m.mountPoint === layout.mountDir) found.push(`mount ${m.mountPoint}`);
  for (const pid of await findProcesses((argv) => isBraidFuseFor(argv, layout.mountDir))) found.push(`braid-fuse pid ${pid}`);
  return found;
}

function request(exportName: string): { exportName: string; socketPath: string; stateDir: string } {
  return { exportName, socketPath: engine().nbdSocket, stateDir };
}

async function dfBytes(mnt: string): Promise<number> {
  const out = (await runOk('df', ['--block-size=1', '--output=size', mnt])).stdout.trim().split('\n');
  return Number(out[out.length - 1]);
}

/**
 * Writes files of random size, each fsynced (file, then directory) before its checksum is
 * recorded, until stopped. Records every error, and the longest time one file took.
 */
class FsyncingWriter {
  readonly done = new Map<string, string>();
  readonly errors: string[] = [];
  longestMs = 0;
  #stop = false;
  readonly #finished: Promise<void>;

  constructor(dir: string) {
    this.#finished = this.#run(dir);
  }

  async #run(dir: string): Promise<void> {
    for (let i = 0; !this.#stop; i++) {
      const name = `w-${i}`;
      const data = randomBytes(4096 + ((i * 7919) % 200_000));
      const started = Date.now();
      try {
        const fd = await open(join(dir, name), 'w');
        try {
          await fd.write(data, 0, data.length, 0);
          await fd.sync();
        } finally {
          await fd.close();
        }
        const dirFd = await open(dir, 'r');
        try {
          await dirFd.sync();
        } finally {
          await dirFd.close();
        }
        this.done.set(name, sha256(data));
      } catch (err) {
        this.errors.push(`${name}: ${(err as Error).message}`);
      }
      this.longestMs = Math.max(this.longestMs, Date.now() - started);
    }
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#finished;
  }
}

describe.skipIf(!canRun)(`fuse attacher (braid-fuse)${why}`, () => {
  const attacher = new FuseAttacher();

  it('attaches idempotently, grows online while mounted (xfs), is found by a fresh attacher, and detaches completely', async () => {
    const name = 'grow';
    const mnt = join(root, 'mnt-grow');
    await engine().createVolume(name, '512M');
    const { devicePath } = await attacher.attach(request(name));
    expect(devicePath).toMatch(/^\/dev\/loop\d+$/);
    expect(await attacher.attach(request(name))).toEqual({ devicePath });
    expect(await deviceSizeBytes(devicePath)).toBe(512 * MiB);
    expect((await readFile(`/sys/block/${devicePath.slice(5)}/loop/dio`, 'utf8')).trim()).toBe('1');

    expect(await formatIfNeeded(devicePath, 'xfs')).toEqual({ formatted: true });
    await mount(devicePath, mnt, 'xfs', []);
    const written = await writeFiles(mnt, [1, 4096, MiB, 20 * MiB + 123]);
    await runOk('sync', ['-f', mnt]);
    const dfBefore = await dfBytes(mnt);
    const statsBefore = await filesystemStats(mnt);

    // A plugin restart: a new attacher finds the same braid-fuse and device.
    const fresh = new FuseAttacher();
    expect(await fresh.find(name, stateDir)).toEqual({ devicePath });
    const pid = (await fresh.probe(name, stateDir)).pid;
    expect(pid).toBeGreaterThan(0);

    // Online: grow the volume while the filesystem is mounted.
    await engine().cliOk(['volume', 'resize', name, '--size', '1G']);
    const refreshed = await fresh.refresh(request(name));
    expect(refreshed).toEqual({ devicePath, sizeBytes: 1024 * MiB, reattached: false });
    expect((await fresh.probe(name, stateDir)).pid).toBe(pid); // same process, nothing re-attached
    await growFilesystem(mnt, 'xfs');
    const dfAfter = await dfBytes(mnt);
    console.log(`df before ${dfBefore} bytes, after resize + xfs_growfs ${dfAfter} bytes`);
    expect(dfAfter - dfBefore).toBeGreaterThanOrEqual(500 * MiB);
    expect((await filesystemStats(mnt)).totalBytes).toBeGreaterThan(1.9 * statsBefore.totalBytes);
    expect(await readSums(mnt, written.keys())).toEqual(written);
    expect(await fresh.refresh(request(name))).toEqual({ devicePath, sizeBytes: 1024 * MiB, reattached: false }); // nothing new

    // A write in the grown part of the device reaches the engine (read back over NBD).
    const handle = await open(devicePath, 'r+');
    try {
      await handle.write(Buffer.alloc(MiB, 0x6b), 0, MiB, 1000 * MiB);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await qemuIo(engine().uri(name), [`read -P 0x6b ${1000 * MiB} ${MiB}`]);

    await expect(attacher.detach(request(name))).rejects.toMatchObject({ code: 'DEVICE_BUSY' });
    await unmount(mnt);
    await fresh.detach(request(name));
    await attacher.detach(request(name)); // idempotent
    expect(await attacher.find(name, stateDir)).toBeUndefined();
    expect(await leftoversOf(name)).toEqual([]);
  });

  it('engine restarts (SIGTERM, then kill -9) under an fsyncing writer: no error, nothing fsynced is lost', async () => {
    const name = 'restarts';
    const mnt = join(root, 'mnt-restarts');
    await engine().createVolume(name, '512M');
    const { devicePath } = await attacher.attach(request(name));
    await formatIfNeeded(devicePath, 'xfs');
    await mount(devicePath, mnt, 'xfs', []);
    const writer = new FsyncingWriter(mnt);

    for (const how of ['SIGTERM', 'kill -9'] as const) {
      await waitFor('the writer to make progress', () => writer.done.size >= 20, 30_000);
      const before = writer.done.size;
      const downAt = Date.now();
      if (how === 'SIGTERM') expect(await engine().stop()).toEqual({ code: 0, signal: null });
      else expect((await engine().kill9()).signal).toBe('SIGKILL');
      await sleep(300); // the writer now waits for the engine
      await engine().start();
      await waitFor('the writer to go on', () => writer.done.size > before + 5, 60_000);
      const status = (await attacher.probe(name, stateDir)).status;
      console.log(`${how}: engine back and the writer moving again ${Date.now() - downAt} ms after the stop; braid-fuse: ${JSON.stringify(status)}`);
      expect(status).toMatchObject({ state: 'connected' });
      expect(await attacher.find(name, stateDir)).toEqual({ devicePath });
    }
    await writer.stop();
    console.log(`writer: ${writer.done.size} files fsynced, longest ${writer.longestMs} ms for one file`);
    expect(writer.errors).toEqual([]);

    // Read everything back through a fresh attachment: from the engine, not from a cache.
    await unmount(mnt);
    await attacher.detach(request(name));
    expect(await leftoversOf(name)).toEqual([]);
    const again = await attacher.attach(request(name));
    await mount(again.devicePath, mnt, 'xfs', []);
    expect(await readSums(mnt, writer.done.keys())).toEqual(writer.done);
    await unmount(mnt);
    await attacher.detach(request(name));
    expect(await leftoversOf(name)).toEqual([]);
  });

  it('an engine away past the reconnect timeout: EIO and unhealthy; back: healthy again by itself', async () => {
    const name = 'timeout';
    const quick = new FuseAttacher({ reconnectTimeoutMs: 1_500 });
    await engine().createVolume(name, '64M');
    const { devicePath } = await quick.attach(request(name));
    const writeAndSync = async (byte: number): Promise<void> => {
      const handle = await open(devicePath, 'r+');
      try {
        await handle.write(Buffer.alloc(4096, byte), 0, 4096, 0);
        await handle.sync();
      } finally {
        await handle.close();
      }
    };
    await writeAndSync(1);
    await engine().stop();
    const started = Date.now();
    await expect(writeAndSync(2)).rejects.toMatchObject({ code: 'EIO' });
    console.log(`EIO after ${Date.now() - started} ms without the engine (reconnect timeout 1500 ms)`);
    expect(await quick.find(name, stateDir)).toBeUndefined();
    expect((await quick.probe(name, stateDir)).status?.state).toBe('failed');

    await engine().start();
    await waitFor('braid-fuse to reconnect', async () => (await quick.find(name, stateDir)) !== undefined, 30_000);
    await writeAndSync(3);
    await qemuIo(engine().uri(name), ['read -P 3 0 4096']);
    await quick.detach(request(name));
    expect(await leftoversOf(name)).toEqual([]);
  });

  it('reports an export the engine does not have, refuses unsafe names, and leaves nothing behind', async () => {
    await expect(attacher.attach(request('missing'))).rejects.toMatchObject({ code: 'ATTACH_FAILED', message: expect.stringMatching(/missing/) });
    expect(await leftoversOf('missing')).toEqual([]);
    await expect(attacher.attach(request('../etc'))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });

    // A volume another attacher attached (the plugin ran with BRAID_ATTACHER=nbdfuse before) is left alone.
    const record = { version: 1, kind: 'nbdfuse', exportName: 'other', socketPath: engine().nbdSocket, mountDir: join(stateDir, 'fuse-other'), pid: 1, loopDevice: null };
    await writeFile(join(stateDir, 'other.json'), JSON.stringify(record));
    await expect(attacher.attach(request('other'))).rejects.toMatchObject({ code: 'STATE_CORRUPT', message: expect.stringMatching(/nbdfuse/) });
    await expect(attacher.detach(request('other'))).rejects.toMatchObject({ code: 'STATE_CORRUPT' });
    expect(JSON.parse(await readFile(join(stateDir, 'other.json'), 'utf8'))).toEqual(record);
    await rm(join(stateDir, 'other.json'));
  });

  it('`braid attach` uses braid-fuse when the machine has no kernel NBD, and `braid detach` cleans up', async () => {
    const e = engine();
    await e.createVolume('cli', '64M');
    const env = { ...process.env, BRAID_ATTACHER: 'fuse' };
    const attached = await e.cli(['attach', 'cli'], { env });
    expect(attached).toMatchObject({ code: 0, stderr: '' });
    const devicePath = attached.stdout.trim();
    expect(devicePath).toMatch(/^\/dev\/loop\d+$/);
    // The CLI has exited; braid-fuse still serves the device.
    await runOk('dd', [`if=${devicePath}`, 'of=/dev/null', 'bs=1M', 'count=4', 'iflag=direct', 'status=none']);
    expect(await leftoversOf('cli', join(e.dir, 'attach'))).not.toEqual([]);
    expect(await e.cli(['detach', 'cli'], { env })).toMatchObject({ code: 0 });
    expect(await leftoversOf('cli', join(e.dir, 'attach'))).toEqual([]);
  });
});
