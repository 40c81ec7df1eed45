/**
 * Hostile names at every entry point of a real daemon: the engine API (create, clone, snapshot,
 * lookups, deletes, resize), the CLI (as arguments, attach and detach included) and the NBD
 * handshake (export names). Each is refused with a clear error whose text is printable ASCII,
 * the daemon keeps serving, no file appears anywhere for such a name, and the daemon's log stays
 * one JSON object per line with no raw control character.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EngineClient } from '../engine/api/client.ts';
import { EngineError } from '../engine/errors.ts';
import { Engine, printLogsOnFailure } from './harness.ts';
import { HOSTILE_NAMES } from './lib/hostile-names.ts';
import { NbdClient, NbdConnectionClosedError, NbdOptionError } from './lib/nbd-client.ts';

printLogsOnFailure();

const PRINTABLE = /^[\x20-\x7e]*$/;
const MiB = 2 ** 20;

/** The EngineError a call rejects with. */
async function refusal(p: Promise<unknown>): Promise<EngineError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof EngineError) return err;
    throw err;
  }
  throw new Error('the call succeeded');
}

/** Every file below `dir`, as relative paths. */
function tree(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const rel = prefix + entry.name;
    out.push(rel);
    if (entry.isDirectory()) out.push(...tree(join(dir, entry.name), `${rel}/`));
  }
  return out;
}

describe('hostile names', () => {
  it('are refused at the engine API, the CLI and the NBD handshake, leaving no trace on disk', async () => {
    const engine = await Engine.create();
    await engine.start();
    await engine.createVolume('vm1', '1M');
    const client = EngineClient.connect(engine.engineSocket);
    try {
      // Engine API: names of new things are INVALID_ARGUMENT; lookups of names that cannot
      // exist are NOT_FOUND. Either way the message is printable.
      for (const name of HOSTILE_NAMES) {
        const label = JSON.stringify(name.slice(0, 40));
        const created = [
          await refusal(client.createVolume(name, MiB)),
          await refusal(client.createSnapshot('vm1', name)),
          await refusal(client.cloneVolume('vm1', name)),
        ];
        for (const err of created) expect({ label, code: err.code }).toEqual({ label, code: 'INVALID_ARGUMENT' });
        const lookups = [
          await refusal(client.getVolume(name)),
          await refusal(client.getSnapshot(name)),
          await refusal(client.deleteVolume(name)),
          await refusal(client.deleteSnapshot(name)),
          await refusal(client.resizeVolume(name, 2 * MiB)),
          await refusal(client.cloneVolume(name, 'fresh')),
          await refusal(client.createSnapshot(name, 'fresh')),
        ];
        for (const err of lookups) expect({ label, code: err.code }).toEqual({ label, code: 'NOT_FOUND' });
        for (const err of [...created, ...lookups]) {
          expect(err.message, label).toMatch(PRINTABLE);
          expect(err.message.length, label).toBeLessThan(400);
        }
      }

      // The CLI (argv cannot carry NUL; the API cases above cover it).
      const viaCli = ['..', '../etc/passwd', 'a/b', 'new\nline', 'esc\u001b[31mred', 'del\u007f', 'bidi\u202eexe.txt', '-rf', 'x'.repeat(300)];
      for (const name of viaCli) {
        for (const args of [
          ['volume', 'create', name, '--size', '1M'],
          ['volume', 'rm', name],
          ['snapshot', 'create', 'vm1', name],
          ['volume', 'clone', 'vm1', name],
          ['detach', name],
        ]) {
          const r = await engine.cli(args);
          const label = `braid ${args.map((a) => JSON.stringify(a)).join(' ')}`;
          expect(r.code, label).not.toBe(0);
          expect(r.stderr, label).toMatch(/^braid: [\x20-\x7e]*\n$/);
        }
      }

      // NBD: a client may ask for any export name; it gets an error reply or a closed connection.
      for (const name of HOSTILE_NAMES) {
        const err = await NbdClient.connect(engine.nbdSocket, name).then(
          async (c) => {
            await c.disconnect();
            return new Error(`export ${JSON.stringify(name)} was opened`);
          },
          (e: unknown) => e,
        );
        expect(err instanceof NbdOptionError || err instanceof NbdConnectionClosedError, `${JSON.stringify(name.slice(0, 40))}: ${String(err)}`).toBe(true);
        if (err instanceof NbdOptionError) expect(err.message).toMatch(PRINTABLE);
      }

      // Still serving, and nothing was created for any of those names.
      const ok = await NbdClient.connect(engine.nbdSocket, 'vm1');
      await ok.disconnect();
      expect((await client.listVolumes()).map((v) => v.name)).toEqual(['vm1']);
      expect(await client.listSnapshots()).toEqual([]);
      const files = tree(engine.dir);
      for (const f of files) expect(f, 'a file in the pool directory').toMatch(/^(braid\.lock|pool\.json|index\.ckpt|segment-\d+\.log|[a-z]+\.sock|node|attach|[a-z0-9._/-]+)$/);
      for (const f of files) expect(f).not.toMatch(/\.\.|etc|passwd|hidden/);
      expect(readdirSync(dirname(engine.dir)).sort()).toEqual(['engine.log', 'pool']);
    } finally {
      client.close();
    }
    expect((await engine.stop()).code).toBe(0);

    // The log: one JSON object per line, no raw control character inside any.
    const lines = readFileSync(engine.logPath, 'utf8').split('\n').filter((l) => l !== '');
    for (const line of lines) {
      expect(line).not.toMatch(/[\0-\x08\x0b-\x1f\x7f]/);
      expect(() => JSON.parse(line), line.slice(0, 200)).not.toThrow();
    }
  });
});
