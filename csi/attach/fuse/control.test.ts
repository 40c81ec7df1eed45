import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { controlRequest, listenControl } from './control.ts';
import type { ServerStatus } from './control.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'braid-control-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const status: ServerStatus = { pid: 1, exportName: 'v', mountDir: '/m', state: 'connected', sizeBytes: 10, replayBytes: 0, replayEntries: 0, inFlight: 0, queued: 0, reconnects: 0 };

function raw(path: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(path, () => s.end(text));
    let out = '';
    s.setEncoding('utf8').on('data', (c: string) => (out += c));
    s.on('close', () => resolve(out));
    s.on('error', reject);
  });
}

describe('control socket', () => {
  it('answers status and resize, reports a failed resize, and refuses what it does not know', async () => {
    let fail = false;
    const path = join(dir, 'c.sock');
    const server = await listenControl(path, {
      status: () => status,
      resize: async () => {
        if (fail) throw new Error('the engine is not running');
        return { sizeBytes: 20, previousBytes: 10 };
      },
    });
    try {
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect(await controlRequest(path, { op: 'status' }, 2_000)).toEqual({ ok: true, ...status });
      expect(await controlRequest(path, { op: 'resize' }, 2_000)).toEqual({ ok: true, sizeBytes: 20, previousBytes: 10 });
      fail = true;
      expect(await controlRequest(path, { op: 'resize' }, 2_000)).toEqual({ ok: false, error: 'the engine is not running' });
      expect(JSON.parse(await raw(path, '{"op":"format"}\n'))).toEqual({ ok: false, error: 'unknown op "format"' });
      expect(JSON.parse(await raw(path, 'nonsense\n'))).toEqual({ ok: false, error: 'the request is not JSON' });
    } finally {
      server.close();
    }
  });

  it('a request to nothing fails instead of hanging', async () => {
    await expect(controlRequest(join(dir, 'none.sock'), { op: 'status' }, 500)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
