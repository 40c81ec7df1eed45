/**
 * `braid serve` as a real process on a real pool: the ready line, clients finding it through
 * --data, the pool lock, a clean stop on SIGTERM/SIGINT (exit 0, sockets gone), and a restart
 * after kill -9 despite the stale sockets.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { execRun, startServe, useTempPool, type Run, type Served } from '../test/fixtures/serve-process.ts';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

const pool = useTempPool('braid-serve-');

/** Starts `braid serve --data DIR` and resolves with its parsed ready line. */
function serve(): Promise<Served> {
  return startServe(process.execPath, [MAIN, 'serve', '--data', pool()]);
}

function braid(args: string[]): Promise<Run> {
  return execRun(process.execPath, [MAIN, ...args]);
}

describe('braid serve', () => {
  it('serves the pool until SIGTERM, then stops cleanly with exit 0', async () => {
    const { child, ready, exited } = await serve();
    expect(ready).toMatchObject({
      engineSocket: join(pool(), 'engine.sock'),
      nbdSocket: join(pool(), 'nbd.sock'),
      nbdUriTemplate: `nbd+unix:///NAME?socket=${join(pool(), 'nbd.sock')}`,
    });

    expect((await braid(['volume', 'create', 'vm1', '--size', '1G', '--data', pool()])).code).toBe(0);
    const stats = JSON.parse((await braid(['stats', '--json', '--data', pool()])).stdout) as Record<string, unknown>;
    expect(stats).toMatchObject({ logicalBytes: 0, volumeCount: 1 });

    const second = await braid(['serve', '--data', pool()]);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/^braid: pool .* is locked[^\n]*\n$/);

    child.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(existsSync(join(pool(), 'engine.sock'))).toBe(false);
    expect(existsSync(join(pool(), 'nbd.sock'))).toBe(false);
  });

  it('restarts after kill -9 despite stale sockets, with its volumes', async () => {
    const first = await serve();
    expect((await braid(['volume', 'create', 'vm1', '--size', '1G', '--data', pool()])).code).toBe(0);
    first.child.kill('SIGKILL');
    await first.exited;
    expect(existsSync(join(pool(), 'engine.sock'))).toBe(true);
    expect((await braid(['volume', 'ls', '--data', pool()])).stderr).toMatch(/^braid: no engine running at /);

    const second = await serve();
    const listed = JSON.parse((await braid(['volume', 'ls', '--json', '--data', pool()])).stdout) as { volumes: { name: string }[] };
    expect(listed.volumes.map((v) => v.name)).toEqual(['vm1']);
    second.child.kill('SIGINT');
    expect(await second.exited).toEqual({ code: 0, signal: null });
  });
});
