/**
 * Clones, snapshots and the full pool seen by real clients against a real `braid serve`:
 * nbdcopy fills a template and checksums 20 clones, qemu-io writes into clones without
 * touching the template or each other, clones outlive their deleted sources across a restart,
 * and a full pool answers ENOSPC to qemu-io, stays up, and takes writes again once data is
 * deleted and cleaned.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BRAID_BIN, Engine, MiB, cleanup, makeTempDir, printLogsOnFailure, qemuIo, run, runOk, sha256File, waitFor } from './harness.ts';

const CLONES = 20;
const TEMPLATE_BYTES = 64 * MiB;

printLogsOnFailure();
afterAll(cleanup);

async function braid(engine: Engine, args: string[]): Promise<void> {
  await runOk(BRAID_BIN, [...args, '--data', engine.dir], { timeoutMs: 60_000 });
}

async function checksum(engine: Engine, name: string, scratch: string): Promise<string> {
  const out = join(scratch, `${name}.img`);
  await runOk('nbdcopy', [engine.uri(name), out], { timeoutMs: 120_000 });
  return sha256File(out);
}

describe('clones and snapshots with real clients', () => {
  it('20 clones of a template read back its exact bytes, and writes stay in their own clone', async () => {
    const engine = await Engine.create();
    await engine.start();
    const scratch = await makeTempDir('braid-clones-');
    const image = join(scratch, 'golden.img');
    await writeFile(image, randomBytes(TEMPLATE_BYTES));
    const golden = await sha256File(image);

    await braid(engine, ['volume', 'create', 'golden', '--size', '64M']);
    await runOk('nbdcopy', ['--flush', image, engine.uri('golden')], { timeoutMs: 120_000 });
    await braid(engine, ['snapshot', 'create', 'golden', 'golden-v1']);
    for (let i = 0; i < CLONES; i++) {
      // Half from the snapshot, half straight from the volume.
      await braid(engine, ['volume', 'clone', i % 2 === 0 ? 'golden-v1' : 'golden', `vm${i}`]);
    }
    for (let i = 0; i < CLONES; i++) expect(await checksum(engine, `vm${i}`, scratch), `vm${i}`).toBe(golden);

    await qemuIo(engine.uri('vm3'), ['write -P 0x33 1M 64k', 'flush']);
    await qemuIo(engine.uri('vm4'), ['write -P 0x44 1M 64k', 'flush']);
    await qemuIo(engine.uri('vm3'), ['read -P 0x33 1M 64k']);
    await qemuIo(engine.uri('vm4'), ['read -P 0x44 1M 64k']);
    expect(await checksum(engine, 'golden', scratch)).toBe(golden);
    expect(await checksum(engine, 'golden-v1', scratch)).toBe(golden);
    expect(await checksum(engine, 'vm5', scratch)).toBe(golden);

    // A snapshot is a read-only export.
    const refused = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x01 0 4k', engine.uri('golden-v1')]);
    expect(`${refused.stdout}${refused.stderr}`).toMatch(/Permission denied|Operation not permitted|read-only/i);

    // Sources deleted while clones live, then a restart: the clones keep every byte.
    await braid(engine, ['snapshot', 'rm', 'golden-v1']);
    await braid(engine, ['volume', 'rm', 'golden']);
    await engine.stop();
    await engine.start();
    expect(await checksum(engine, 'vm0', scratch)).toBe(golden);
    expect(await checksum(engine, 'vm1', scratch)).toBe(golden);
    await qemuIo(engine.uri('vm3'), ['read -P 0x33 1M 64k']);
  });
});

describe('a full pool', () => {
  it('answers ENOSPC to qemu-io, keeps serving reads, and takes writes again after a delete', async () => {
    const engine = await Engine.create(['--capacity', '512M']);
    await engine.start();
    await braid(engine, ['volume', 'create', 'big', '--size', '1G']);
    await braid(engine, ['volume', 'create', 'other', '--size', '64M']);
    await qemuIo(engine.uri('other'), ['write -P 0x5a 0 1M', 'flush']);

    const full = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 0 768M', engine.uri('big')], { timeoutMs: 300_000 });
    expect(`${full.stdout}${full.stderr}`).toMatch(/No space left on device/);
    await qemuIo(engine.uri('other'), ['read -P 0x5a 0 1M']);
    await braid(engine, ['volume', 'ls']);

    await braid(engine, ['volume', 'rm', 'big']);
    // The cleaner runs in the background; writes fit again once it has freed segments.
    await waitFor('space after deleting and cleaning', async () => (await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 32M', '-c', 'flush', engine.uri('other')])).code === 0, 120_000, 500);
    await qemuIo(engine.uri('other'), ['read -P 0x77 0 32M']);
  });
});
