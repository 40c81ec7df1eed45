/**
 * The CSI Node service on real devices: a real engine daemon in a temp directory, the real CSI
 * server in local mode (Identity, Controller, Node) and a grpc-js client built from our
 * csi.proto, the way a CO talks to the plugin. Volumes are attached with the attacher the
 * machine has (CI: no nbd module, so braid-fuse + loop devices), formatted with real mkfs,
 * mounted and bind-mounted for real. Needs root, /dev/fuse and loop devices.
 *
 * Every flow ends with NodeUnpublish + NodeUnstage and proves nothing is left: no loop device on
 * our files, no mount under our directory, no braid-fuse (or nbdfuse) process, no attach or
 * stage record.
 * afterAll tears down whatever a failed test left, devices before the engine.
 *
 * Last, `bin/braid serve` as a process: it serves CSI on DIR/csi.sock.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, realpath, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isBraidFuseFor } from '../csi/attach/fuse/layout.ts';
import { isNbdfuseFor } from '../csi/attach/nbdfuse-layout.ts';
import { findProcesses, waitForExit } from '../csi/attach/proc.ts';
import { startLocalCsi } from '../csi/local-mode.ts';
import type { LocalCsi } from '../csi/local-mode.ts';
import { parseMountInfo } from '../csi/mount/mountinfo.ts';
import { createNodeService } from '../csi/node-setup.ts';
import { codeOf, newClient, unary } from '../csi/testing/harness.ts';
import { blockCap, mountCap, range, snapshotSource } from '../csi/testing/requests.ts';
import { startEngineDaemon } from '../engine/daemon.ts';
import type { EngineDaemon } from '../engine/daemon.ts';
import { silentLogger } from '../engine/logger.ts';

const MiB = 2 ** 20;
const NODE_ID = 'csi-node-test';
const BRAID = fileURLToPath(new URL('../bin/braid', import.meta.url));

const canRun = process.getuid?.() === 0 && existsSync('/dev/fuse') && existsSync('/dev/loop-control');
/** CAP_SYS_RESOURCE is capability 24 (linux/capability.h); CapEff is a hex mask in /proc/self/status. */
const capabilities = (await readFile('/proc/self/status', 'utf8')).split('\n').find((l) => l.startsWith('CapEff:')) ?? 'CapEff unknown';
const capSysResource = (BigInt(`0x${capabilities.split(/\s+/)[1] ?? '0'}`) & (1n << 24n)) !== 0n;
const why = canRun ? '' : ' (skipped: needs root, /dev/fuse and /dev/loop-control)';

// ---- programs -----------------------------------------------------------------------------

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: readonly string[]): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(file, [...args], { timeout: 120_000, maxBuffer: 16 * MiB }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

async function runOk(file: string, args: readonly string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

// ---- the plugin under test ----------------------------------------------------------------

let root: string;
let poolDir: string;
let nodeStateDir: string;
let daemon: EngineDaemon | undefined;
let csi: LocalCsi | undefined;
type Call = (method: string, request?: object) => Promise<Record<string, unknown>>;
let controller: Call;
let node: Call;
const clients: { close(): void }[] = [];

/** Starts (or restarts, over the same state) the CSI server with a fresh Node service instance. */
async function startPlugin(): Promise<void> {
  const nodeService = await createNodeService({ nodeId: NODE_ID, stateDir: nodeStateDir, logger: silentLogger, defaultNbdSocketPath: join(poolDir, 'nbd.sock') });
  csi = await startLocalCsi({ dir: poolDir, logger: silentLogger, nodeId: NODE_ID, node: nodeService });
  const controllerClient = newClient('Controller', csi.server.socketPath);
  const nodeClient = newClient('Node', csi.server.socketPath);
  clients.push(controllerClient, nodeClient);
  controller = (method, request = {}) => unary(controllerClient, method, request);
  node = (method, request = {}) => unary(nodeClient, method, request);
}

async function stopPlugin(): Promise<void> {
  for (const client of clients.splice(0)) client.close();
  await csi?.close();
  csi = undefined;
}

beforeAll(async () => {
  if (!canRun) return;
  root = await realpath(await mkdtemp(join(tmpdir(), 'braid-csi-node-')));
  poolDir = join(root, 'pool');
  nodeStateDir = join(poolDir, 'node');
  daemon = await startEngineDaemon({ dir: poolDir, logger: silentLogger });
  await startPlugin();
});

// A failed test may leave devices and records behind: clear them, so that the next test's
// leftovers() speaks about that test only.
afterEach(async (context) => {
  if (!root || context.task.result?.state !== 'fail') return;
  await tearDownUnder(join(root, 'kubelet'));
  await tearDownUnder(nodeStateDir);
  await rm(join(nodeStateDir, 'volumes'), { recursive: true, force: true });
  await rm(join(nodeStateDir, 'attach'), { recursive: true, force: true });
});

afterAll(async () => {
  if (!root) return;
  await stopPlugin();
  await tearDownUnder(root);
  await daemon?.close();
  await rm(root, { recursive: true, force: true });
});

// ---- requests -----------------------------------------------------------------------------

interface Created {
  volumeId: string;
  volumeContext: Record<string, string>;
}

async function createVolume(name: string, sizeBytes: number, cap: object, extra: Record<string, unknown> = {}): Promise<Created> {
  const res = await controller('CreateVolume', { name, capacityRange: range(sizeBytes), volumeCapabilities: [cap], ...extra });
  return res.volume as Created;
}

function paths(volumeId: string): { staging: string; target: string } {
  return { staging: join(root, 'kubelet', 'staging', volumeId), target: join(root, 'kubelet', 'pods', 'pod-1', volumeId) };
}

async function stage(v: Created, cap: object, staging = paths(v.volumeId).staging): Promise<void> {
  await mkdir(staging, { recursive: true }); // the CO creates the staging directory
  await node('NodeStageVolume', { volumeId: v.volumeId, stagingTargetPath: staging, volumeCapability: cap, volumeContext: v.volumeContext });
}

async function publish(v: Created, cap: object, target = paths(v.volumeId).target, readonly = false): Promise<void> {
  const { staging } = paths(v.volumeId);
  await node('NodePublishVolume', { volumeId: v.volumeId, stagingTargetPath: staging, targetPath: target, volumeCapability: cap, readonly, volumeContext: v.volumeContext });
}

async function unpublish(v: Created, target = paths(v.volumeId).target): Promise<void> {
  await node('NodeUnpublishVolume', { volumeId: v.volumeId, targetPath: target });
}

async function unstage(v: Created): Promise<void> {
  await node('NodeUnstageVolume', { volumeId: v.volumeId, stagingTargetPath: paths(v.volumeId).staging });
}

// ---- what is live, and what is left -------------------------------------------------------

async function mountTable(): Promise<{ mountPoint: string; fsType: string; source: string; mountOptions: string }[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

async function loops(): Promise<{ name: string; backingFile: string }[]> {
  const listed = JSON.parse((await runOk('losetup', ['--json', '--list'])) || '{"loopdevices":[]}') as { loopdevices: { name: string; 'back-file': string }[] };
  return listed.loopdevices.map((d) => ({ name: d.name, backingFile: d['back-file'].replace(/ \(deleted\)$/, '') }));
}

/** Whether a process is an attacher helper (braid-fuse or nbdfuse) working under `under`. */
function isHelperUnder(argv: readonly string[], under: (p: string) => boolean): boolean {
  const helper = argv[0]?.endsWith('nbdfuse') === true || argv.some((a) => a.endsWith('/braid-fuse.ts'));
  return helper && argv.some(under);
}

/** Everything the node plugin left of its volumes: loop devices, mounts, attacher helper processes, records. */
async function leftovers(): Promise<string[]> {
  const under = (p: string): boolean => p.startsWith(`${root}/`);
  const found: string[] = [];
  for (const l of await loops()) if (under(l.backingFile)) found.push(`loop ${l.name} on ${l.backingFile}`);
  for (const m of await mountTable()) if (under(m.mountPoint)) found.push(`mount ${m.fsType} at ${m.mountPoint}`);
  for (const pid of await findProcesses((argv) => isHelperUnder(argv, under))) found.push(`attacher helper pid ${pid}`);
  for (const sub of ['volumes', 'attach']) {
    const files = await readdir(join(nodeStateDir, sub)).catch(() => []);
    for (const f of files) found.push(`state ${sub}/${f}`);
  }
  return found;
}

/** Unmounts, detaches and stops everything under `dir`, deepest first, ignoring errors. */
async function tearDownUnder(dir: string): Promise<void> {
  const under = (p: string): boolean => p.startsWith(`${dir}/`);
  const mounts = (await mountTable()).filter((m) => under(m.mountPoint)).sort((a, b) => b.mountPoint.length - a.mountPoint.length);
  for (const m of mounts.filter((m) => !m.fsType.startsWith('fuse'))) {
    if ((await run('umount', [m.mountPoint])).code !== 0) await run('umount', ['-l', m.mountPoint]);
  }
  for (const l of await loops()) if (under(l.backingFile)) await run('losetup', ['--detach', l.name]);
  for (const m of mounts.filter((m) => m.fsType.startsWith('fuse'))) {
    if ((await run('umount', [m.mountPoint])).code !== 0) await run('umount', ['-l', m.mountPoint]);
  }
  for (const pid of await findProcesses((argv) => isHelperUnder(argv, under))) {
    if (!(await waitForExit(pid, 5_000))) process.kill(pid, 'SIGKILL');
  }
}

// ---- data ---------------------------------------------------------------------------------

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Writes `data` at `offset` of a device (or file) and flushes it to the engine. */
async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fd = await open(path, 'r+');
  try {
    await fd.write(data, 0, data.length, offset);
    await fd.sync();
  } finally {
    await fd.close();
  }
}

async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fd = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(length);
    const { bytesRead } = await fd.read(buffer, 0, length, offset);
    return buffer.subarray(0, bytesRead);
  } finally {
    await fd.close();
  }
}

async function writeFiles(dir: string, count: number): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const data = randomBytes(100_000 + i * 77_777);
    await writeFile(join(dir, `file-${i}`), data);
    sums.set(`file-${i}`, sha256(data));
  }
  return sums;
}

async function readSums(dir: string, names: Iterable<string>): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (const name of names) sums.set(name, sha256(await readFile(join(dir, name))));
  return sums;
}

function usage(stats: Record<string, unknown>, unit: string): { total: string; available?: string; used?: string } | undefined {
  return (stats.usage as { unit: string; total: string; available: string; used: string }[]).find((u) => u.unit === unit);
}

// ---- the flows ----------------------------------------------------------------------------

describe.skipIf(!canRun)(`CSI Node service on real devices${why}`, () => {
  it('block: stage, publish a real block device, use it, tear down, and find the data again', async () => {
    const cap = blockCap();
    const v = await createVolume('blk-1', 64 * MiB, cap);
    const { target } = paths(v.volumeId);
    await stage(v, cap);
    await stage(v, cap); // idempotent
    await publish(v, cap);
    await publish(v, cap);
    expect((await stat(target)).isBlockDevice()).toBe(true);

    const mnt = join(root, 'mnt', 'blk-1');
    await mkdir(mnt, { recursive: true });
    await runOk('mkfs.ext4', ['-q', target]);
    await runOk('mount', [target, mnt]);
    const sums = await writeFiles(mnt, 3);
    // The pod still uses the device: unstage must refuse rather than pull it away.
    await unpublish(v);
    expect(await codeOf(unstage(v))).toBe('FAILED_PRECONDITION');
    await runOk('umount', [mnt]);
    await unstage(v);
    await unstage(v); // idempotent
    expect(await leftovers()).toEqual([]);

    await stage(v, cap);
    await publish(v, cap);
    await runOk('mount', [target, mnt]);
    expect(await readSums(mnt, sums.keys())).toEqual(sums);
    await runOk('umount', [mnt]);
    const stats = await node('NodeGetVolumeStats', { volumeId: v.volumeId, volumePath: target });
    expect(usage(stats, 'BYTES')?.total).toBe(String(64 * MiB));
    expect(stats.volumeCondition).toMatchObject({ abnormal: false });
    await unpublish(v);
    await unpublish(v);
    await unstage(v);
    expect(await leftovers()).toEqual([]);
  });

  it('block: a read-only publish gives a device that refuses writers', async () => {
    const cap = blockCap();
    const v = await createVolume('blk-ro', 16 * MiB, cap);
    const { target } = paths(v.volumeId);
    await stage(v, cap);
    await publish(v, cap, target, true);
    const write = await run('dd', ['if=/dev/zero', `of=${target}`, 'bs=4096', 'count=1', 'conv=notrunc,fsync', 'status=none']);
    expect(write.code).not.toBe(0);
    expect((await runOk('blockdev', ['--getro', target])).trim()).toBe('1');
    await unpublish(v);
    await unstage(v);
    expect(await leftovers()).toEqual([]);
  });

  it('mount: stage formats ext4 and mounts it, publish binds it, read-only publish refuses writes, stats', async () => {
    const cap = mountCap('ext4');
    const v = await createVolume('fs-1', 64 * MiB, cap);
    const { staging, target } = paths(v.volumeId);
    const readOnlyTarget = `${target}-ro`;
    await stage(v, cap);
    await stage(v, cap);
    const stagingMount = (await mountTable()).find((m) => m.mountPoint === staging);
    expect(stagingMount).toMatchObject({ fsType: 'ext4' });
    expect(stagingMount?.source).toMatch(/^\/dev\/(loop|nbd)\d+$/);

    await publish(v, cap);
    await publish(v, cap, readOnlyTarget, true);
    await writeFile(join(target, 'hello.txt'), 'written through the publish target');
    expect(await readFile(join(staging, 'hello.txt'), 'utf8')).toBe('written through the publish target');
    expect(await readFile(join(readOnlyTarget, 'hello.txt'), 'utf8')).toBe('written through the publish target');
    await expect(writeFile(join(readOnlyTarget, 'nope.txt'), 'x')).rejects.toMatchObject({ code: 'EROFS' });

    for (const path of [staging, target]) {
      const stats = await node('NodeGetVolumeStats', { volumeId: v.volumeId, volumePath: path });
      const bytes = usage(stats, 'BYTES');
      const inodes = usage(stats, 'INODES');
      const fs = await statfs(path);
      expect(Number(bytes?.total)).toBe(fs.blocks * fs.bsize);
      expect(Number(bytes?.total)).toBeGreaterThan(50 * MiB);
      expect(Number(bytes?.used)).toBeGreaterThan(0);
      expect(Number(inodes?.total)).toBe(fs.files);
      expect(stats.volumeCondition).toMatchObject({ abnormal: false });
    }
    expect(await codeOf(node('NodeGetVolumeStats', { volumeId: v.volumeId, volumePath: root }))).toBe('NOT_FOUND');

    expect(await codeOf(unstage(v))).toBe('FAILED_PRECONDITION');
    await unpublish(v, readOnlyTarget);
    await unpublish(v);
    expect(existsSync(target)).toBe(false);
    await unstage(v);
    expect(await leftovers()).toEqual([]);

    // Staged again: the filesystem is found, not re-created.
    await stage(v, cap);
    expect(await readFile(join(staging, 'hello.txt'), 'utf8')).toBe('written through the publish target');
    await unstage(v);
    expect(await leftovers()).toEqual([]);
  });

  it('clone: a volume created from a snapshot has the snapshot\'s exact content', async () => {
    const cap = blockCap();
    const source = await createVolume('clone-src', 32 * MiB, cap);
    const { target: sourceTarget } = paths(source.volumeId);
    await stage(source, cap);
    await publish(source, cap);
    const snapshotData = randomBytes(3 * MiB);
    await writeAt(sourceTarget, 5 * MiB, snapshotData);
    await controller('CreateSnapshot', { name: 'clone-snap', sourceVolumeId: source.volumeId });
    // Written after the snapshot: the clone must not see it.
    await writeAt(sourceTarget, 5 * MiB, randomBytes(MiB));

    const clone = await createVolume('clone-1', 32 * MiB, cap, { volumeContentSource: snapshotSource('clone-snap') });
    const { target: cloneTarget } = paths(clone.volumeId);
    await stage(clone, cap);
    await publish(clone, cap);
    expect(sha256(await readAt(cloneTarget, 5 * MiB, 3 * MiB))).toBe(sha256(snapshotData));
    expect(sha256(await readAt(sourceTarget, 5 * MiB, 3 * MiB))).not.toBe(sha256(snapshotData));

    for (const v of [clone, source]) {
      await unpublish(v);
      await unstage(v);
    }
    expect(await leftovers()).toEqual([]);
  });

  it('clone: an xfs clone mounts beside its source (nouuid) with the same files', async () => {
    const cap = mountCap('xfs');
    const source = await createVolume('xfs-src', 512 * MiB, cap);
    await stage(source, cap);
    const sums = await writeFiles(paths(source.volumeId).staging, 2);
    await runOk('sync', ['-f', join(paths(source.volumeId).staging, 'file-0')]);
    await controller('CreateSnapshot', { name: 'xfs-snap', sourceVolumeId: source.volumeId });
    const clone = await createVolume('xfs-clone', 512 * MiB, cap, { volumeContentSource: snapshotSource('xfs-snap') });
    await stage(clone, cap); // the source is still mounted: same UUID
    expect(await readSums(paths(clone.volumeId).staging, sums.keys())).toEqual(sums);
    await unstage(clone);
    await unstage(source);
    expect(await leftovers()).toEqual([]);
  });

  it('a restarted node plugin publishes what the previous one staged, and unstage cleans up', async () => {
    const cap = mountCap('ext4');
    const v = await createVolume('restart-1', 64 * MiB, cap);
    await stage(v, cap);
    await stopPlugin();
    await startPlugin(); // a new Node service instance over the same state directory
    await publish(v, cap);
    await writeFile(join(paths(v.volumeId).target, 'after-restart'), 'ok');
    expect(await readFile(join(paths(v.volumeId).staging, 'after-restart'), 'utf8')).toBe('ok');
    await stopPlugin();
    await startPlugin();
    await unpublish(v);
    await unstage(v);
    expect(await leftovers()).toEqual([]);
  });

  it('expansion is online with braid-fuse (xfs): Identity says ONLINE, the published filesystem grows in place', async () => {
    const identityClient = newClient('Identity', csi!.server.socketPath);
    clients.push(identityClient);
    const caps = (await unary(identityClient, 'GetPluginCapabilities', {})).capabilities as { volumeExpansion?: { type: string } }[];
    expect(caps.find((c) => c.volumeExpansion)?.volumeExpansion?.type).toBe('ONLINE');
    // xfs: xfs_growfs needs CAP_SYS_ADMIN only; ext4's online grow also needs CAP_SYS_RESOURCE
    // (below), which some sandboxes drop even for root.
    const cap = mountCap('xfs');
    const v = await createVolume('grow-fs', 512 * MiB, cap);
    const { staging, target } = paths(v.volumeId);
    await stage(v, cap);
    await publish(v, cap);
    await writeFile(join(target, 'keep'), 'kept across the expansion');
    const before = await statfs(target);
    const grown = await controller('ControllerExpandVolume', { volumeId: v.volumeId, capacityRange: range(768 * MiB), volumeCapability: cap });
    expect(grown).toMatchObject({ capacityBytes: String(768 * MiB), nodeExpansionRequired: true });
    const expanded = await node('NodeExpandVolume', { volumeId: v.volumeId, volumePath: target, capacityRange: range(768 * MiB), volumeCapability: cap });
    expect(expanded).toEqual({ capacityBytes: String(768 * MiB) });
    const after = await statfs(target);
    // xfs keeps its log out of statfs: the data section grew by the 256 MiB added.
    expect(after.blocks * after.bsize - before.blocks * before.bsize).toBeGreaterThanOrEqual(250 * MiB);
    expect(await readFile(join(target, 'keep'), 'utf8')).toBe('kept across the expansion');
    const stats = await node('NodeGetVolumeStats', { volumeId: v.volumeId, volumePath: staging });
    expect(Number(usage(stats, 'BYTES')?.total)).toBe(after.blocks * after.bsize);
    await unpublish(v);
    await unstage(v);
    expect(await leftovers()).toEqual([]);
  });

  it('expansion of a mounted ext4 (where the process may resize ext4 online; a clear FAILED_PRECONDITION where not)', async () => {
    const cap = mountCap('ext4');
    const v = await createVolume('grow-ext4', 64 * MiB, cap);
    const { staging } = paths(v.volumeId);
    await stage(v, cap);
    await controller('ControllerExpandVolume', { volumeId: v.volumeId, capacityRange: range(160 * MiB), volumeCapability: cap });
    const expand = node('NodeExpandVolume', { volumeId: v.volumeId, volumePath: staging, capacityRange: range(160 * MiB) });
    if (capSysResource) {
      expect(await expand).toEqual({ capacityBytes: String(160 * MiB) });
      const after = await statfs(staging);
      expect(after.blocks * after.bsize).toBeGreaterThan(140 * MiB);
    } else {
      // ext4_resize_begin answers EPERM without CAP_SYS_RESOURCE: the grow is attempted and
      // reported as what it is; the device itself did grow.
      console.warn(`ext4 online grow not checked: this process lacks CAP_SYS_RESOURCE (${capabilities})`);
      let failure: { code?: number; details?: string } = {};
      await expand.catch((err: { code?: number; details?: string }) => (failure = err));
      expect(failure.details).toMatch(/CAP_SYS_RESOURCE/);
      expect(await codeOf(node('NodeExpandVolume', { volumeId: v.volumeId, volumePath: staging, capacityRange: range(160 * MiB) }))).toBe('FAILED_PRECONDITION');
    }
    await unstage(v);
    expect(await leftovers()).toEqual([]);
  });

  it('expansion of a block volume staged but not published: the device shows the new size', async () => {
    const blk = await createVolume('grow-blk', 32 * MiB, blockCap());
    await stage(blk, blockCap());
    await controller('ControllerExpandVolume', { volumeId: blk.volumeId, capacityRange: range(48 * MiB), volumeCapability: blockCap() });
    const blkStaging = paths(blk.volumeId).staging;
    expect(await node('NodeExpandVolume', { volumeId: blk.volumeId, volumePath: blkStaging, capacityRange: range(48 * MiB) })).toEqual({ capacityBytes: String(48 * MiB) });
    await publish(blk, blockCap());
    expect((await runOk('blockdev', ['--getsize64', paths(blk.volumeId).target])).trim()).toBe(String(48 * MiB));
    await unpublish(blk);
    await unstage(blk);
    expect(await leftovers()).toEqual([]);
  });

  it.each([
    ['block', blockCap()],
    ['mount', mountCap('ext4')],
  ])('reports an abnormal condition when the attacher helper (braid-fuse, nbdfuse) died under a %s volume, and unstage still cleans up', async (kind, cap) => {
    const v = await createVolume(`dies-${kind}`, 16 * MiB, cap);
    await stage(v, cap);
    const attachDir = join(nodeStateDir, 'attach');
    const pids = await findProcesses((argv) => isBraidFuseFor(argv, join(attachDir, `braid-fuse-${v.volumeId}`)) || isNbdfuseFor(argv, join(attachDir, `fuse-${v.volumeId}`)));
    if (pids.length === 0) {
      await unstage(v); // kernel NBD: no helper process to kill
      return;
    }
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    for (const pid of pids) await waitForExit(pid, 5_000);
    const stats = await node('NodeGetVolumeStats', { volumeId: v.volumeId, volumePath: paths(v.volumeId).staging });
    expect(stats.volumeCondition).toMatchObject({ abnormal: true });
    await unstage(v);
    expect(await leftovers()).toEqual([]);
  });

  it('answers NOT_FOUND for a volume the engine does not have, FAILED_PRECONDITION for publish before stage', async () => {
    const missing = { volumeId: 'no-such-volume', volumeContext: {} };
    expect(await codeOf(stage(missing, blockCap()))).toBe('NOT_FOUND');
    const v = await createVolume('not-staged', 16 * MiB, blockCap());
    expect(await codeOf(publish(v, blockCap()))).toBe('FAILED_PRECONDITION');
    expect(await leftovers()).toEqual([]);
  });
});

// ---- braid serve --------------------------------------------------------------------------

describe('braid serve', () => {
  let dir: string | undefined;
  let child: ChildProcess | undefined;

  afterAll(async () => {
    if (child?.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves CSI on DIR/csi.sock: GetPluginInfo answers csi.braid.dev, NodeGetInfo this host', async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-serve-csi-'));
    child = spawn(BRAID, ['serve', '--data', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    let ready: Record<string, unknown> | undefined;
    for await (const line of createInterface({ input: child.stdout! })) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (typeof entry['msg'] === 'string' && entry['msg'].startsWith('braid ready')) {
        ready = entry;
        break;
      }
    }
    expect(ready).toMatchObject({ csiSocket: join(dir, 'csi.sock'), nodeId: hostname() });
    expect((await stat(join(dir, 'csi.sock'))).isSocket()).toBe(true);

    const identity = newClient('Identity', join(dir, 'csi.sock'));
    const nodeClient = newClient('Node', join(dir, 'csi.sock'));
    try {
      expect(await unary(identity, 'GetPluginInfo', {})).toMatchObject({ name: 'csi.braid.dev' });
      expect(await unary(nodeClient, 'NodeGetInfo', {})).toMatchObject({ nodeId: hostname() });
    } finally {
      identity.close();
      nodeClient.close();
    }
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(join(dir, 'csi.sock'))).toBe(false);
  });
});
