/**
 * Real NBD clients (qemu-img, qemu-io, nbdinfo, nbdcopy) against NbdServer over the in-memory
 * device, on a temporary unix socket. These catch what raw-socket tests cannot: how the
 * clients actually negotiate, split, pipeline and interpret our replies.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startTestServer } from '../engine/nbd/test-support.ts';
import type { TestServer } from '../engine/nbd/test-support.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const KiB = 1024;

let t: TestServer;
let scratch: string;

beforeEach(async () => {
  t = await startTestServer((exports) => {
    exports.create('disk', 64 * MiB);
    exports.create('copy', 8 * MiB);
    exports.create('golden', MiB, { readOnly: true }).poke(0, Buffer.alloc(MiB, 0x5e));
  });
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'braid-nbd-clients-'));
});

afterEach(async () => {
  await t.stop();
  await fs.rm(scratch, { recursive: true, force: true });
  expect(t.exports.openHandles).toBe(0);
});

function uri(name: string): string {
  return `nbd+unix:///${name}?socket=${t.socketPath}`;
}

/** Runs a tool; rejects (with its output in the error) if it exits non-zero. */
async function tool(file: string, args: string[]): Promise<string> {
  const { stdout } = await run(file, args, { timeout: 120_000, maxBuffer: 16 * MiB });
  return stdout;
}

function qemuIo(name: string, commands: string[]): Promise<string> {
  return tool('qemu-io', ['-f', 'raw', ...commands.flatMap((c) => ['-c', c]), uri(name)]);
}

async function sha256(file: string): Promise<string> {
  return createHash('sha256').update(await fs.readFile(file)).digest('hex');
}

describe('qemu', () => {
  it('qemu-img info shows the export size', async () => {
    const info = JSON.parse(await tool('qemu-img', ['info', '--output=json', uri('disk')])) as Record<string, unknown>;
    expect(info['virtual-size']).toBe(64 * MiB);
  });

  it('qemu-io writes patterns, aligned and unaligned, and reads them back', async () => {
    await qemuIo('disk', ['write -P 0xab 0 64k', 'write -P 0x11 1000 3000', 'write -P 0x22 1m 5']);
    const volume = t.exports.volume('disk');
    expect(volume.peek(1000, 3000).equals(Buffer.alloc(3000, 0x11))).toBe(true);
    expect(volume.peek(4000, 61536).equals(Buffer.alloc(61536, 0xab))).toBe(true);
    // A fresh connection sees the same bytes.
    await qemuIo('disk', [
      'read -P 0xab 0 1000',
      'read -P 0x11 1000 3000',
      'read -P 0xab 4000 61536',
      'read -P 0x22 1m 5',
      'read -P 0 1048581 4091',
    ]);
  });

  it('qemu-io fails on a pattern that is not there (the check above can fail)', async () => {
    await qemuIo('disk', ['write -P 0xab 0 4k']);
    await expect(qemuIo('disk', ['read -P 0xac 0 4k'])).rejects.toThrow();
  });

  it('qemu-img convert reads a read-only export', async () => {
    const out = path.join(scratch, 'golden.raw');
    await tool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri('golden'), out]);
    expect((await fs.readFile(out)).equals(Buffer.alloc(MiB, 0x5e))).toBe(true);
  });
});

describe('libnbd', () => {
  interface MapEntry {
    offset: number;
    length: number;
    type: number;
  }

  it('nbdinfo --map shows holes for unwritten and trimmed ranges', async () => {
    await qemuIo('disk', ['write -P 0x77 0 1m', 'discard 256k 256k']);
    const map = JSON.parse(await tool('nbdinfo', ['--map', '--json', uri('disk')])) as MapEntry[];
    expect(map.map(({ offset, length, type }) => ({ offset, length, type }))).toEqual([
      { offset: 0, length: 256 * KiB, type: 0 },
      { offset: 256 * KiB, length: 256 * KiB, type: 3 },
      { offset: 512 * KiB, length: 512 * KiB, type: 0 },
      { offset: MiB, length: 63 * MiB, type: 3 },
    ]);
  });

  it('nbdinfo --list shows every export with its size and read-only flag', async () => {
    const listing = JSON.parse(await tool('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${t.socketPath}`])) as {
      exports: { 'export-name': string; 'export-size': number; is_read_only: boolean }[];
    };
    const exports = listing.exports
      .map((e) => [e['export-name'], e['export-size'], e.is_read_only])
      .sort((a, b) => String(a[0]).localeCompare(String(b[0])));
    expect(exports).toEqual([
      ['copy', 8 * MiB, false],
      ['disk', 64 * MiB, false],
      ['golden', MiB, true],
    ]);
  });

  it('nbdcopy round-trips 8 MiB with a hole, byte for byte', async () => {
    const source = path.join(scratch, 'source.raw');
    const back = path.join(scratch, 'back.raw');
    const file = await fs.open(source, 'w');
    await file.write(randomBytes(3 * MiB), 0, 3 * MiB, 0);
    await file.write(randomBytes(3 * MiB), 0, 3 * MiB, 5 * MiB); // [3 MiB, 5 MiB) stays a hole
    await file.close();
    await tool('nbdcopy', [source, uri('copy')]);
    await tool('nbdcopy', [uri('copy'), back]);
    expect(await sha256(back)).toBe(await sha256(source));
    expect(t.exports.volume('copy').peek(0, 8 * MiB).equals(await fs.readFile(source))).toBe(true);
  });
});
