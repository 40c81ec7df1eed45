/**
 * `braid serve` as a process: who may open its sockets (--socket-mode, --socket-group) and its
 * Prometheus metrics (--metrics-addr) read over real HTTP while a client writes through NBD.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BRAID_BIN, Engine, makeTempDir, printLogsOnFailure, run } from './harness.ts';
import { NbdClient } from './lib/nbd-client.ts';

printLogsOnFailure();

const SOCKETS = ['nbd.sock', 'engine.sock', 'csi.sock'];

/** A group to share the sockets with: one root may chown to, else our own. */
function shareGroup(): { arg: string; gid: number } {
  if (process.getuid!() === 0) {
    try {
      const line = execFileSync('getent', ['group', 'daemon'], { encoding: 'utf8' });
      return { arg: 'daemon', gid: Number(line.split(':')[2]) };
    } catch {
      return { arg: '1', gid: 1 };
    }
  }
  return { arg: String(process.getgid!()), gid: process.getgid!() };
}

async function modeOf(path: string): Promise<{ mode: number; gid: number }> {
  const st = await stat(path);
  return { mode: st.mode & 0o7777, gid: st.gid };
}

/** The metrics URL from the daemon's ready line. */
function metricsUrl(engine: Engine): string {
  const ready = readFileSync(engine.logPath, 'utf8')
    .split('\n')
    .filter((l) => l.includes('braid ready'))
    .at(-1);
  const url = ready === undefined ? undefined : (JSON.parse(ready) as { metricsUrl?: string }).metricsUrl;
  if (url === undefined) throw new Error(`no metricsUrl in the ready line: ${ready}`);
  return url;
}

async function scrape(url: string): Promise<Map<string, number>> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  const samples = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    const m = /^(braid_[a-z_]+) (\S+)$/.exec(line);
    if (m) samples.set(m[1]!, Number(m[2]));
  }
  return samples;
}

describe('socket permissions', () => {
  it('are 0600 by default for all three sockets', async () => {
    const engine = await Engine.create();
    await engine.start();
    for (const name of SOCKETS) expect((await modeOf(join(engine.dir, name))).mode, name).toBe(0o600);
    await engine.stop();
  });

  it('--socket-mode 0660 --socket-group GROUP shares all three, and the pool directory for search only', async () => {
    const group = shareGroup();
    const engine = await Engine.create(['--socket-mode', '0660', '--socket-group', group.arg]);
    await engine.start();
    for (const name of SOCKETS) expect(await modeOf(join(engine.dir, name)), name).toEqual({ mode: 0o660, gid: group.gid });
    const dir = await modeOf(engine.dir);
    expect(dir.gid).toBe(group.gid);
    expect(dir.mode & 0o010).toBe(0o010); // the group may search it, to reach the sockets
    // The pool's own files stay private.
    expect((await modeOf(join(engine.dir, 'pool.json'))).mode).toBe(0o600);
    await engine.stop();
  });

  it('refuses an unknown group or a bad mode before starting anything (exit 2, one line)', async () => {
    const dir = join(await makeTempDir(), 'pool');
    const unknown = await run(BRAID_BIN, ['serve', '--data', dir, '--socket-group', 'braid-no-such-group']);
    expect(unknown).toMatchObject({ code: 2, stderr: 'braid: unknown group "braid-no-such-group": no such group on this system\n' });
    const mode = await run(BRAID_BIN, ['serve', '--data', dir, '--socket-mode', '0466']);
    expect(mode.code).toBe(2);
    expect(mode.stderr).toMatch(/^braid: invalid socket mode 0466: the owner needs read and write/);
    const group = await run(BRAID_BIN, ['serve', '--data', dir, '--socket-group', '../etc']);
    expect(group.code).toBe(2);
    await expect(stat(dir)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('--metrics-addr', () => {
  it('serves Prometheus metrics that follow NBD writes and flushes', async () => {
    const engine = await Engine.create(['--metrics-addr', '127.0.0.1:0']);
    await engine.start();
    await engine.createVolume('vm1', '16M');
    const url = metricsUrl(engine);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);

    const before = await scrape(url);
    expect(before.get('braid_pool_volumes')).toBe(1);
    expect(before.get('braid_pool_read_only')).toBe(0);
    expect(before.get('braid_nbd_connections')).toBe(0);

    const client = await NbdClient.connect(engine.nbdSocket, 'vm1');
    try {
      for (let i = 0; i < 8; i++) await client.write(i * 65536, Buffer.alloc(65536, i + 1));
      await client.flush();
      const during = await scrape(url);
      expect(during.get('braid_nbd_connections')).toBe(1);
      expect(during.get('braid_pool_logical_bytes')).toBe(8 * 65536);
      expect(during.get('braid_log_write_requests_total')).toBeGreaterThanOrEqual(8);
      expect(during.get('braid_log_batches_total')).toBeGreaterThan(before.get('braid_log_batches_total')!);
      expect(during.get('braid_log_fdatasyncs_total')).toBeGreaterThan(before.get('braid_log_fdatasyncs_total')!);
      expect(during.get('braid_log_flush_requests_total')).toBeGreaterThanOrEqual(1);
      expect(during.get('braid_pool_physical_bytes')).toBeGreaterThanOrEqual(8 * 65536);
    } finally {
      await client.disconnect();
    }
    expect((await engine.stop()).code).toBe(0);
  });
});
