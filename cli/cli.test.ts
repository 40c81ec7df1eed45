/**
 * The CLI in-process (runCli with a capturing context) against the real engine API server
 * backed by an in-memory VolumeManager, plus a few runs of the real entry point as a process.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EngineApiServer } from '../engine/api/server.ts';
import { EngineError } from '../engine/errors.ts';
import { silentLogger } from '../engine/logger.ts';
import { FakeVolumeManager } from '../test/fixtures/fake-volume-manager.ts';
import type { EngineDaemonOptions } from '../engine/daemon.ts';
import type { CliContext, StartedDaemon } from './context.ts';
import { runCli } from './run.ts';

const GiB = 2 ** 30;
const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

let dir: string;
let manager: FakeVolumeManager;
let server: EngineApiServer;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-cli-'));
  manager = new FakeVolumeManager({ capacityBytes: 2 ** 40 });
  server = new EngineApiServer({ manager, logger: silentLogger });
  await server.listen(join(dir, 'engine.sock'));
});

afterEach(async () => {
  await server.close();
  await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function context(overrides: Partial<CliContext> = {}): CliContext & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    stdout: (text) => out.push(text),
    stderr: (text) => err.push(text),
    env: {},
    startDaemon: () => Promise.reject(new Error('startDaemon not expected in this test')),
    waitForShutdown: () => Promise.resolve('SIGTERM'),
    logStream: { write: () => true },
    ...overrides,
  };
}

async function braid(args: string[], overrides: Partial<CliContext> = {}): Promise<Run> {
  const ctx = context(overrides);
  const code = await runCli(args, ctx);
  return { code, stdout: ctx.out.join(''), stderr: ctx.err.join('') };
}

/** Runs the CLI with `--data dir` after the command words. */
function braidAt(args: string[]): Promise<Run> {
  return braid([...args, '--data', dir]);
}

describe('volume commands', () => {
  it('create prints the volume and its NBD URI', async () => {
    const r = await braidAt(['volume', 'create', 'vm1', '--size', '1G']);
    expect(r).toEqual({
      code: 0,
      stdout: `created volume "vm1" (1.00 GiB): nbd+unix:///vm1?socket=${join(dir, 'nbd.sock')}\n`,
      stderr: '',
    });
    expect(manager.volumes.get('vm1')?.sizeBytes).toBe(GiB);
  });

  it('accepts every SIZE form of CLI.md', async () => {
    for (const [size, bytes] of [['4096', 4096], ['512K', 512 * 1024], ['512M', 512 * 2 ** 20], ['4G', 4 * GiB], ['1T', 2 ** 40]] as const) {
      const name = `v${bytes}`;
      expect((await braidAt(['volume', 'create', name, '--size', size])).code).toBe(0);
      expect(manager.volumes.get(name)?.sizeBytes).toBe(bytes);
    }
  });

  it('ls prints an aligned table', async () => {
    await braidAt(['volume', 'create', 'vm1', '--size', '1G']);
    await braidAt(['volume', 'create', 'database-01', '--size', '100G']);
    manager.volumes.get('vm1')!.allocatedBytes = 512 * 2 ** 20;
    const r = await braidAt(['volume', 'ls']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(
      ['NAME             SIZE  ALLOCATED', 'database-01   100 GiB        0 B', 'vm1          1.00 GiB    512 MiB', ''].join('\n'),
    );
  });

  it('ls --json prints {volumes: [...]} with exact byte counts', async () => {
    await braidAt(['volume', 'create', 'vm1', '--size', '5T']);
    const r = await braidAt(['volume', 'ls', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      volumes: [
        {
          name: 'vm1',
          sizeBytes: 5 * 2 ** 40,
          allocatedBytes: 0,
          createdAt: new Date(manager.nowMs).toISOString(),
          openHandles: 0,
        },
      ],
    });
    expect(JSON.parse((await braidAt(['volume', 'ls', '--json'])).stdout)).toHaveProperty('volumes');
  });

  it('resize grows a volume', async () => {
    await braidAt(['volume', 'create', 'vm1', '--size', '1G']);
    const r = await braidAt(['volume', 'resize', 'vm1', '--size', '2G']);
    expect(r).toEqual({ code: 0, stdout: 'resized volume "vm1" to 2.00 GiB\n', stderr: '' });
  });

  it('rm removes a volume', async () => {
    await braidAt(['volume', 'create', 'vm1', '--size', '1G']);
    expect(await braidAt(['volume', 'rm', 'vm1'])).toEqual({ code: 0, stdout: 'removed volume "vm1"\n', stderr: '' });
    expect(manager.volumes.size).toBe(0);
  });
});

describe('volume create --dedup', () => {
  it('sends dedup to the engine only when asked', async () => {
    expect((await braidAt(['volume', 'create', 'plain', '--size', '1G'])).code).toBe(0);
    const r = await braidAt(['volume', 'create', 'deduped', '--size', '1G', '--dedup']);
    expect(r).toEqual({
      code: 0,
      stdout: `created volume "deduped" (1.00 GiB): nbd+unix:///deduped?socket=${join(dir, 'nbd.sock')}\n`,
      stderr: '',
    });
    expect([...manager.dedup]).toEqual(['deduped']);
  });

  it('says in its help what dedup does', async () => {
    const r = await braid(['volume', 'create', '--help']);
    expect(r.code).toBe(0);
    const help = r.stdout.replace(/\s+/g, ' ');
    expect(help).toContain('--dedup');
    expect(help).toContain('store identical 4 KiB blocks once, matched by SHA-256');
  });
});

describe('volume clone', () => {
  beforeEach(async () => {
    await braidAt(['volume', 'create', 'vm1', '--size', '1G']);
  });

  it('clones a volume at its size and prints the new NBD URI', async () => {
    expect(await braidAt(['volume', 'clone', 'vm1', 'c1'])).toEqual({
      code: 0,
      stdout: `cloned "vm1" to volume "c1" (1.00 GiB): nbd+unix:///c1?socket=${join(dir, 'nbd.sock')}\n`,
      stderr: '',
    });
    expect(manager.volumes.get('c1')?.sizeBytes).toBe(GiB);
  });

  it('clones a snapshot, larger with --size', async () => {
    await braidAt(['snapshot', 'create', 'vm1', 'snap1']);
    const r = await braidAt(['volume', 'clone', 'snap1', 'c1', '--size', '4G']);
    expect(r).toMatchObject({ code: 0, stdout: expect.stringMatching(/^cloned "snap1" to volume "c1" \(4\.00 GiB\): /), stderr: '' });
    expect(manager.volumes.get('c1')?.sizeBytes).toBe(4 * GiB);
  });

  it('inherits dedup', async () => {
    await braidAt(['volume', 'create', 'gold', '--size', '1G', '--dedup']);
    await braidAt(['volume', 'clone', 'gold', 'c1']);
    expect(manager.dedup.has('c1')).toBe(true);
  });

  it('fails with exit 1 and one line: missing source, taken name, smaller size', async () => {
    expect(await braidAt(['volume', 'clone', 'nope', 'c1'])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'braid: no volume or snapshot named "nope"\n',
    });
    expect(await braidAt(['volume', 'clone', 'vm1', 'vm1'])).toEqual({ code: 1, stdout: '', stderr: 'braid: volume "vm1" already exists\n' });
    expect(await braidAt(['volume', 'clone', 'vm1', 'c1', '--size', '512M'])).toEqual({
      code: 1,
      stdout: '',
      stderr: `braid: a clone of "vm1" needs at least ${GiB} bytes; ${512 * 2 ** 20} requested\n`,
    });
    expect((await braidAt(['volume', 'clone', 'vm1', 'Bad_Name'])).stderr).toMatch(/^braid: invalid volume name "Bad_Name": [^\n]*\n$/);
    expect([...manager.volumes.keys()]).toEqual(['vm1']);
  });

  it('--size 0 is refused, not taken as "the source size"', async () => {
    expect(await braidAt(['volume', 'clone', 'vm1', 'c1', '--size', '0'])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'braid: invalid size 0: must be a positive number of bytes\n',
    });
  });
});

describe('snapshot commands', () => {
  beforeEach(async () => {
    await braidAt(['volume', 'create', 'vm1', '--size', '1G']);
  });

  it('create prints the snapshot and its read-only NBD URI', async () => {
    expect(await braidAt(['snapshot', 'create', 'vm1', 'snap1'])).toEqual({
      code: 0,
      stdout: `created snapshot "snap1" of volume "vm1" (1.00 GiB, read-only): nbd+unix:///snap1?socket=${join(dir, 'nbd.sock')}\n`,
      stderr: '',
    });
    expect(manager.snapshots.get('snap1')).toMatchObject({ sourceVolume: 'vm1', sizeBytes: GiB });
  });

  it('ls prints an aligned table NAME SOURCE SIZE CREATED, sorted by name', async () => {
    await braidAt(['volume', 'create', 'database-01', '--size', '100G']);
    manager.nowMs = Date.UTC(2024, 4, 1, 12, 34, 56, 789);
    await braidAt(['snapshot', 'create', 'vm1', 'vm1-before-upgrade']);
    manager.nowMs = Date.UTC(2024, 4, 2, 8, 0, 0);
    await braidAt(['snapshot', 'create', 'database-01', 'db-nightly']);
    const r = await braidAt(['snapshot', 'ls']);
    expect(r).toEqual({
      code: 0,
      stdout: [
        'NAME                SOURCE           SIZE  CREATED',
        'db-nightly          database-01   100 GiB  2024-05-02 08:00:00Z',
        'vm1-before-upgrade  vm1          1.00 GiB  2024-05-01 12:34:56Z',
        '',
      ].join('\n'),
      stderr: '',
    });
  });

  it('ls with no snapshots prints the header only', async () => {
    expect(await braidAt(['snapshot', 'ls'])).toEqual({ code: 0, stdout: 'NAME  SOURCE  SIZE  CREATED\n', stderr: '' });
  });

  it('ls --json prints {snapshots: [...]} with exact byte counts', async () => {
    await braidAt(['volume', 'create', 'big', '--size', '5T']);
    manager.volumes.get('big')!.allocatedBytes = 2 ** 33;
    await braidAt(['snapshot', 'create', 'big', 'snap1']);
    const r = await braidAt(['snapshot', 'ls', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      snapshots: [
        {
          name: 'snap1',
          sourceVolume: 'big',
          sizeBytes: 5 * 2 ** 40,
          allocatedBytes: 2 ** 33,
          createdAt: new Date(manager.nowMs).toISOString(),
        },
      ],
    });
    expect((await braidAt(['snapshot', 'rm', 'snap1'])).code).toBe(0);
    expect(JSON.parse((await braidAt(['snapshot', 'ls', '--json'])).stdout)).toEqual({ snapshots: [] });
  });

  it('snapshots are not listed as volumes', async () => {
    await braidAt(['snapshot', 'create', 'vm1', 'snap1']);
    expect(JSON.parse((await braidAt(['volume', 'ls', '--json'])).stdout)).toMatchObject({ volumes: [{ name: 'vm1' }] });
  });

  it('rm removes a snapshot and leaves clones made from it', async () => {
    await braidAt(['snapshot', 'create', 'vm1', 'snap1']);
    await braidAt(['volume', 'clone', 'snap1', 'c1']);
    expect(await braidAt(['snapshot', 'rm', 'snap1'])).toEqual({ code: 0, stdout: 'removed snapshot "snap1"\n', stderr: '' });
    expect(manager.snapshots.size).toBe(0);
    expect(manager.volumes.has('c1')).toBe(true);
  });

  it('fails with exit 1 and one line', async () => {
    await braidAt(['snapshot', 'create', 'vm1', 'snap1']);
    expect(await braidAt(['snapshot', 'create', 'vm1', 'snap1'])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'braid: snapshot "snap1" already exists\n',
    });
    expect(await braidAt(['snapshot', 'create', 'vm1', 'vm1'])).toMatchObject({ code: 1, stderr: 'braid: volume "vm1" already exists\n' });
    expect(await braidAt(['snapshot', 'create', 'vm9', 's2'])).toEqual({ code: 1, stdout: '', stderr: 'braid: volume "vm9" not found\n' });
    expect(await braidAt(['snapshot', 'rm', 'nope'])).toEqual({ code: 1, stdout: '', stderr: 'braid: snapshot "nope" not found\n' });
    // A volume is not removed by `snapshot rm`, nor a snapshot by `volume rm`.
    expect(await braidAt(['snapshot', 'rm', 'vm1'])).toMatchObject({ code: 1, stderr: 'braid: snapshot "vm1" not found\n' });
    expect(await braidAt(['volume', 'rm', 'snap1'])).toMatchObject({ code: 1, stderr: 'braid: volume "snap1" not found\n' });
    expect((await braidAt(['snapshot', 'create', 'vm1', 'Snap'])).stderr).toMatch(/^braid: invalid snapshot name "Snap": [^\n]*\n$/);
    manager.failNext(new EngineError('BUSY', 'snapshot "snap1" is in use by 1 connection(s);\ndisconnect them first'));
    expect(await braidAt(['snapshot', 'rm', 'snap1'])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'braid: snapshot "snap1" is in use by 1 connection(s); disconnect them first\n',
    });
  });

  it('no engine running', async () => {
    const other = join(dir, 'elsewhere');
    for (const args of [['snapshot', 'ls'], ['snapshot', 'create', 'vm1', 's'], ['snapshot', 'rm', 's'], ['volume', 'clone', 'vm1', 'c']]) {
      expect(await braid([...args, '--data', other])).toEqual({
        code: 1,
        stdout: '',
        stderr: `braid: no engine running at ${other} (start it with \`braid serve --data ${other}\`)\n`,
      });
    }
  });
});

describe('stats', () => {
  it('--json prints the keys of CLI.md first, in order', async () => {
    await braidAt(['volume', 'create', 'vm1', '--size', '1G']);
    const r = await braidAt(['stats', '--json']);
    expect(r.code).toBe(0);
    const stats = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(stats).slice(0, 8)).toEqual([
      'logicalBytes',
      'physicalBytes',
      'savedByClonesBytes',
      'savedByDedupBytes',
      'deadBytes',
      'capacityBytes',
      'writesPerBatch',
      'flushesPerFdatasync',
    ]);
    expect(stats).toMatchObject({ capacityBytes: 2 ** 40, volumeCount: 1, readOnly: false });
    // CLI.md keeps `volumes` for per-volume detail.
    expect(stats).not.toHaveProperty('volumes');
    for (const value of Object.values(stats)) expect(['number', 'boolean']).toContain(typeof value);
  });

  it('says when no capacity was set', async () => {
    manager.capacityBytes = 0;
    expect((await braidAt(['stats'])).stdout).toMatch(/^capacity\s+not set/m);
  });

  it('prints a readable summary', async () => {
    const r = await braidAt(['stats']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^capacity\s+1\.00 TiB \(0\.0% used\)$/m);
    expect(r.stdout).toMatch(/^writes per batch\s+0\.00$/m);
    expect(r.stdout).toMatch(/^state\s+read-write$/m);
  });
});

describe('errors: exit 1 and one line on stderr', () => {
  it('volume already exists', async () => {
    await braidAt(['volume', 'create', 'vm1', '--size', '1G']);
    expect(await braidAt(['volume', 'create', 'vm1', '--size', '1G'])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'braid: volume "vm1" already exists\n',
    });
  });

  it('volume not found', async () => {
    expect(await braidAt(['volume', 'rm', 'vm9'])).toEqual({ code: 1, stdout: '', stderr: 'braid: volume "vm9" not found\n' });
    expect((await braidAt(['volume', 'resize', 'vm9', '--size', '1G'])).code).toBe(1);
  });

  it('an invalid name, refused by the engine', async () => {
    const r = await braidAt(['volume', 'create', 'VM_1', '--size', '1G']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^braid: invalid volume name "VM_1": [^\n]*\n$/);
  });

  it('shrinking', async () => {
    await braidAt(['volume', 'create', 'vm1', '--size', '2G']);
    expect(await braidAt(['volume', 'resize', 'vm1', '--size', '1G'])).toMatchObject({ code: 1, stderr: 'braid: volume "vm1" cannot shrink\n' });
  });

  it('an engine failure with a multi-line message stays on one line', async () => {
    manager.failNext(new EngineError('IO_ERROR', 'write failed:\n  EIO on segment 7'));
    expect(await braidAt(['stats'])).toMatchObject({ code: 1, stderr: 'braid: write failed: EIO on segment 7\n' });
  });

  it('no engine running', async () => {
    const other = join(dir, 'elsewhere');
    expect(await braid(['volume', 'ls', '--data', other])).toEqual({
      code: 1,
      stdout: '',
      stderr: `braid: no engine running at ${other} (start it with \`braid serve --data ${other}\`)\n`,
    });
  });
});

describe('usage errors: exit 2 and one line on stderr', () => {
  it('a bad SIZE', async () => {
    expect(await braidAt(['volume', 'create', 'vm1', '--size', '12X'])).toEqual({
      code: 2,
      stdout: '',
      stderr: 'braid: invalid size "12X": use bytes or a K/M/G/T suffix\n',
    });
    expect((await braidAt(['volume', 'resize', 'vm1', '--size', '-1G'])).code).toBe(2);
    expect(manager.volumes.size).toBe(0);
  });

  it.each([
    [['volume', 'create', 'vm1'], "braid: required option '--size <SIZE>' not specified\n"],
    [['volume', 'create', '--size', '1G'], "braid: missing required argument 'NAME'\n"],
    [['volume', 'ls', 'extra'], /^braid: too many arguments/],
    [['volume', 'ls', '--bogus'], "braid: unknown option '--bogus'\n"],
    [['frobnicate'], "braid: unknown command 'frobnicate'\n"],
    [['volume', 'clone', 'vm1'], "braid: missing required argument 'NEW'\n"],
    [['volume', 'clone', 'vm1', 'c1', '--size', '12X'], 'braid: invalid size "12X": use bytes or a K/M/G/T suffix\n'],
    [['volume', 'clone', 'vm1', 'c1', 'c2'], /^braid: too many arguments/],
    [['snapshot', 'create', 'vm1'], "braid: missing required argument 'SNAP'\n"],
    [['snapshot', 'create'], "braid: missing required argument 'VOLUME'\n"],
    [['snapshot', 'rm'], "braid: missing required argument 'SNAP'\n"],
    [['snapshot', 'ls', 'extra'], /^braid: too many arguments/],
    [['snapshot', 'ls', '--size', '1G'], "braid: unknown option '--size'\n"],
    [['snapshot', 'frobnicate'], "braid: unknown command 'frobnicate'\n"],
    [['serve', '--log-level', 'loud'], /^braid: option '--log-level <LEVEL>' argument 'loud' is invalid/],
  ])('%j', async (args, stderr) => {
    const r = await braid(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    if (typeof stderr === 'string') expect(r.stderr).toBe(stderr);
    else {
      expect(r.stderr).toMatch(stderr);
      expect(r.stderr.split('\n')).toHaveLength(2);
    }
  });

  it('a command group without a command shows its help on stderr', async () => {
    const r = await braid(['volume']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: braid volume');
  });

  it('the snapshot group without a command shows its help on stderr', async () => {
    const r = await braid(['snapshot']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Usage: braid snapshot');
    for (const command of ['create', 'ls', 'rm']) expect(r.stderr).toMatch(new RegExp(`^\\s+${command}\\b`, 'm'));
  });

  it('every new command takes --data', async () => {
    for (const args of [['volume', 'clone'], ['snapshot', 'create'], ['snapshot', 'ls'], ['snapshot', 'rm']]) {
      const r = await braid([...args, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('--data <DIR>');
    }
  });

  it('--help is not an error', async () => {
    const r = await braid(['volume', 'create', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--size <SIZE>');
    expect(r.stdout).toMatch(/\(default: \$BRAID_DATA or\s+\.\/braid-data\)/);
  });
});

describe('--data', () => {
  it('defaults to $BRAID_DATA', async () => {
    expect((await braid(['volume', 'create', 'vm1', '--size', '1G'], { env: { BRAID_DATA: dir } })).code).toBe(0);
    expect(manager.volumes.has('vm1')).toBe(true);
  });

  it('defaults to ./braid-data without $BRAID_DATA', async () => {
    const r = await braid(['stats'], { env: { BRAID_DATA: '' } });
    expect(r.stderr).toBe('braid: no engine running at ./braid-data (start it with `braid serve --data ./braid-data`)\n');
  });
});

describe('serve', () => {
  function fakeDaemon(): StartedDaemon & { closed: number; startedWith: unknown[] } {
    return {
      nbdSocketPath: join(dir, 'nbd.sock'),
      engineSocketPath: join(dir, 'engine.sock'),
      closed: 0,
      startedWith: [],
      async close() {
        this.closed++;
      },
    };
  }

  it('starts the daemon, logs a JSON ready line, and closes it on a signal', async () => {
    const daemon = fakeDaemon();
    const logLines: string[] = [];
    const r = await braid(['serve', '--data', dir, '--capacity', '2T', '--log-level', 'debug'], {
      startDaemon: async (opts) => {
        daemon.startedWith.push({ dir: opts.dir, capacityBytes: opts.capacityBytes });
        return daemon;
      },
      logStream: { write: (line: string) => logLines.push(line) },
    });
    expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(daemon.startedWith).toEqual([{ dir, capacityBytes: 2 * 2 ** 40 }]);
    expect(daemon.closed).toBe(1);
    const logs = logLines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const ready = logs.find((l) => typeof l['msg'] === 'string' && l['msg'].startsWith('braid ready'));
    expect(ready).toMatchObject({
      engineSocket: join(dir, 'engine.sock'),
      nbdSocket: join(dir, 'nbd.sock'),
      nbdUriTemplate: `nbd+unix:///NAME?socket=${join(dir, 'nbd.sock')}`,
    });
    expect(logs.filter((l) => l['component'] === undefined).map((l) => l['msg'])).toEqual([ready?.['msg'], 'shutting down', 'stopped']);
  });

  it('hands --metrics-addr and the socket access to the daemon', async () => {
    let given: EngineDaemonOptions | undefined;
    const r = await braid(['serve', '--data', dir, '--metrics-addr', '127.0.0.1:9090', '--socket-mode', '0660'], {
      startDaemon: async (opts) => {
        given = opts;
        return fakeDaemon();
      },
    });
    expect(r.code).toBe(0);
    expect(given).toMatchObject({ metrics: { host: '127.0.0.1', port: 9090 }, socketMode: 0o660 });
    expect(given).not.toHaveProperty('socketGid');
  });

  it('checks its arguments before starting anything', async () => {
    let started = false;
    const startDaemon = async (): Promise<StartedDaemon> => {
      started = true;
      return fakeDaemon();
    };
    expect(await braid(['serve', '--data', dir, '--capacity', '12X'], { startDaemon })).toMatchObject({
      code: 2,
      stderr: 'braid: invalid size "12X": use bytes or a K/M/G/T suffix\n',
    });
    expect((await braid(['serve', '--data', dir, '--cache-size', 'lots'], { startDaemon })).code).toBe(2);
    expect((await braid(['serve', '--data', dir, '--metrics-addr', 'nowhere'], { startDaemon })).code).toBe(2);
    expect(started).toBe(false);
  });

  it('exits 1 with the reason when the engine cannot start', async () => {
    const r = await braid(['serve', '--data', dir], {
      startDaemon: () => Promise.reject(new EngineError('FAILED_PRECONDITION', `pool ${dir} is locked by another engine`)),
    });
    expect(r).toEqual({ code: 1, stdout: '', stderr: `braid: pool ${dir} is locked by another engine\n` });
  });
});

describe('the braid executable', () => {
  function exec(args: string[], env: Record<string, string> = {}): Promise<Run> {
    return new Promise((resolve) => {
      execFile(process.execPath, [MAIN, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      });
    });
  }

  it('exits 0, 1 and 2 as documented', async () => {
    expect(await exec(['volume', 'create', 'vm1', '--size', '1G', '--data', dir])).toMatchObject({ code: 0, stderr: '' });
    expect(await exec(['volume', 'ls'], { BRAID_DATA: dir })).toMatchObject({ code: 0, stdout: expect.stringContaining('vm1') });
    expect(await exec(['volume', 'create', 'vm1', '--size', '1G', '--data', dir])).toEqual({
      code: 1,
      stdout: '',
      stderr: 'braid: volume "vm1" already exists\n',
    });
    expect(await exec(['volume', 'create', 'vm2', '--size', '12X', '--data', dir])).toEqual({
      code: 2,
      stdout: '',
      stderr: 'braid: invalid size "12X": use bytes or a K/M/G/T suffix\n',
    });
  });
});
