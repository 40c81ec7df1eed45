/**
 * Restarts: a clean stop (SIGTERM) keeps everything, a second engine on the same pool is
 * refused while the first runs (and does not disturb it), and the socket and lock files a
 * kill -9 leaves behind do not prevent the next start.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, expect, beforeAll } from 'vitest';
import { BRAID_BIN, Engine, GiB, MiB, makeTempDir, printLogsOnFailure, qemuIo, run, runOk, sha256File } from './harness.ts';
import { NbdClient } from './lib/nbd-client.ts';

printLogsOnFailure();

async function randomFile(dir: string, name: string, sizeBytes: number): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, randomBytes(sizeBytes));
  return path;
}

/** nbdcopy the whole volume to a file and return its sha256. */
async function volumeSha(engine: Engine, name: string, scratchDir: string): Promise<string> {
  const out = join(scratchDir, `${name}-${Date.now()}-${Math.random().toString(36).slice(2)}.out`);
  await runOk('nbdcopy', [engine.uri(name), out], { timeoutMs: 120_000 });
  return sha256File(out);
}

describe('clean stop and restart', () => {
  let engine: Engine;
  let scratch: string;
  const expected = new Map<string, string>();

  beforeAll(async () => {
    engine = await Engine.create();
    scratch = await makeTempDir('braid-restart-');
    await engine.start();
  });

  it('SIGTERM exits 0 and every flushed write, volume and size is there after restart', async () => {
    await engine.createVolume('r1', '64M');
    await engine.createVolume('r2', '32M');
    await engine.createVolume('r3', '1G'); // stays empty
    const f1 = await randomFile(scratch, 'r1.bin', 64 * MiB);
    const f2 = await randomFile(scratch, 'r2.bin', 32 * MiB);
    await runOk('nbdcopy', ['--flush', f1, engine.uri('r1')]);
    await runOk('nbdcopy', ['--flush', f2, engine.uri('r2')]);
    expected.set('r1', await sha256File(f1));
    expected.set('r2', await sha256File(f2));
    const before = await engine.listVolumes();
    expect(before).toEqual([
      { name: 'r1', sizeBytes: 64 * MiB },
      { name: 'r2', sizeBytes: 32 * MiB },
      { name: 'r3', sizeBytes: GiB },
    ]);

    const stopped = await engine.stop();
    expect(stopped).toEqual({ code: 0, signal: null });
    expect(engine.logTail(5)).toMatch(/stopped/);

    await engine.start();
    expect(await engine.listVolumes()).toEqual(before);
    expect(await volumeSha(engine, 'r1', scratch)).toBe(expected.get('r1'));
    expect(await volumeSha(engine, 'r2', scratch)).toBe(expected.get('r2'));
    const map = JSON.parse((await runOk('nbdinfo', ['--map', '--json', engine.uri('r3')])).stdout) as { type: number }[];
    expect(map.every((e) => e.type === 3), 'r3 was never written: one hole').toBe(true);
  });

  it('acknowledged but unflushed writes survive a clean stop too', async () => {
    await engine.createVolume('r4', '16M');
    // No flush and no FUA: the writes are only acknowledged.
    const client = await NbdClient.connect(engine.nbdSocket, 'r4');
    const data = randomBytes(3 * MiB + 4096 + 17);
    await client.write(12345, data);
    await client.disconnect();
    const stopped = await engine.stop();
    expect(stopped.code).toBe(0);
    await engine.start();
    const again = await NbdClient.connect(engine.nbdSocket, 'r4');
    try {
      expect((await again.read(12345, data.length)).equals(data)).toBe(true);
      expect((await again.read(0, 12345)).equals(Buffer.alloc(12345))).toBe(true);
    } finally {
      await again.disconnect();
    }
  });

  it('a second `braid serve` on the same pool fails with "locked" and leaves the first one alone', async () => {
    const second = await run(BRAID_BIN, ['serve', '--data', engine.dir], { timeoutMs: 60_000 });
    expect(second.signal, 'the second engine did not exit by itself').toBeNull();
    expect(second.code).not.toBe(0);
    expect(second.stderr).toMatch(/locked/);
    const errorLines = second.stderr.split('\n').filter((l) => l.startsWith('braid: '));
    expect(errorLines).toHaveLength(1);

    // The first engine still serves both sockets and its data.
    expect(existsSync(engine.nbdSocket)).toBe(true);
    expect(existsSync(engine.engineSocket)).toBe(true);
    expect((await engine.listVolumes()).map((v) => v.name)).toEqual(['r1', 'r2', 'r3', 'r4']);
    expect(await volumeSha(engine, 'r2', scratch)).toBe(expected.get('r2'));
    await qemuIo(engine.uri('r3'), ['write -P 0x3c 0 64k', 'flush', 'read -P 0x3c 0 64k']);
  });

  it('stale sockets and lock left by kill -9 do not prevent a restart', async () => {
    expect((await engine.kill9()).signal).toBe('SIGKILL');
    // The scenario is real only if the files are still there.
    expect(existsSync(engine.nbdSocket), 'stale nbd.sock').toBe(true);
    expect(existsSync(engine.engineSocket), 'stale engine.sock').toBe(true);
    expect(readdirSync(engine.dir).filter((f) => /lock/i.test(f)), 'a stale lock file').not.toHaveLength(0);

    await engine.start();
    expect((await engine.listVolumes()).map((v) => v.name)).toEqual(['r1', 'r2', 'r3', 'r4']);
    expect(await volumeSha(engine, 'r1', scratch)).toBe(expected.get('r1'));
    await qemuIo(engine.uri('r3'), ['read -P 0x3c 0 64k']);

    // And once more, killed straight after it became ready.
    await engine.kill9();
    await engine.start();
    expect(await volumeSha(engine, 'r2', scratch)).toBe(expected.get('r2'));
    const stopped = await engine.stop();
    expect(stopped).toEqual({ code: 0, signal: null });
  });
});
