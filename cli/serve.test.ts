/**
 * `braid serve` as a real process on a real pool: the ready line, clients finding it through
 * --data, the pool lock, a clean stop on SIGTERM/SIGINT (exit 0, sockets gone), and a restart
 * after kill -9 despite the stale sockets.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

let dir: string;
const children: ChildProcess[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-serve-'));
});

afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await rm(dir, { recursive: true, force: true });
});

interface Served {
  child: ChildProcess;
  ready: Record<string, unknown>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `braid serve --data dir` and resolves with its parsed ready line. */
async function serve(): Promise<Served> {
  const child = spawn(process.execPath, [MAIN, 'serve', '--data', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const lines = createInterface({ input: child.stdout! });
  for await (const line of lines) {
    const entry = JSON.parse(line) as Record<string, unknown>;
    if (typeof entry['msg'] === 'string' && entry['msg'].startsWith('braid ready')) return { child, ready: entry, exited };
  }
  throw new Error(`braid serve exited before it was ready: ${JSON.stringify(await exited)}`);
}

function braid(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr });
    });
  });
}

describe('braid serve', () => {
  it('serves the pool until SIGTERM, then stops cleanly with exit 0', async () => {
    const { child, ready, exited } = await serve();
    expect(ready).toMatchObject({
      engineSocket: join(dir, 'engine.sock'),
      nbdSocket: join(dir, 'nbd.sock'),
      nbdUriTemplate: `nbd+unix:///NAME?socket=${join(dir, 'nbd.sock')}`,
    });

    expect((await braid(['volume', 'create', 'vm1', '--size', '1G', '--data', dir])).code).toBe(0);
    const stats = JSON.parse((await braid(['stats', '--json', '--data', dir])).stdout) as Record<string, unknown>;
    expect(stats).toMatchObject({ logicalBytes: 0, volumeCount: 1 });

    const second = await braid(['serve', '--data', dir]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/^braid: pool .* is locked[^\n]*\n$/);

    child.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(existsSync(join(dir, 'engine.sock'))).toBe(false);
    expect(existsSync(join(dir, 'nbd.sock'))).toBe(false);
  });

  it('restarts after kill -9 despite stale sockets, with its volumes', async () => {
    const first = await serve();
    expect((await braid(['volume', 'create', 'vm1', '--size', '1G', '--data', dir])).code).toBe(0);
    first.child.kill('SIGKILL');
    await first.exited;
    expect(existsSync(join(dir, 'engine.sock'))).toBe(true);
    expect((await braid(['volume', 'ls', '--data', dir])).stderr).toMatch(/^braid: no engine running at /);

    const second = await serve();
    const listed = JSON.parse((await braid(['volume', 'ls', '--json', '--data', dir])).stdout) as { volumes: { name: string }[] };
    expect(listed.volumes.map((v) => v.name)).toEqual(['vm1']);
    second.child.kill('SIGINT');
    expect(await second.exited).toEqual({ code: 0, signal: null });
  });
});
