// `npm run bench -- <name> [options]`: Braid's side-by-side benchmarks (DESIGN.md §6).
// Parses the command line, prints the machine description, makes the run's scratch directory and
// dispatches. Exit status: 0 when every system ran, 1 when one failed (its row says why), 2 for a
// usage error.

import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { blender } from './blender.ts';
import { bootstorm } from './bootstorm.ts';
import { cleaner } from './cleaner.ts';
import { clone } from './clone.ts';
import { dedup } from './dedup.ts';
import { type BenchContext, makeScratchDir } from './context.ts';
import { describeMachine } from './machine.ts';
import { installExitHooks } from './proc.ts';
import { randread } from './randread.ts';
import { seqwrite } from './seqwrite.ts';
import { nbdkitArgs, type PerFileCache, qemuNbdArgs, SYSTEM_KINDS, type SystemKind } from './systems.ts';

const REPO_DIR = resolve(dirname(import.meta.filename), '..', '..');

const USAGE = `usage: npm run bench -- <command> [options]

commands:
  blender   N VMs, 4 KiB random write + flush each, iodepth 1: engine vs per-file qemu-nbd vs nbdkit
            [--vms 64] [--seconds 15] [--warmup 2] [--volume-size 1G]
  seqwrite  1 MiB sequential writes + end fsync: one engine volume vs a plain file
            [--seconds 15] [--size 4G] [--iodepth 4]
  clone     P5: clone fully written templates (1 GiB and 8 GiB) through the engine API; space of 100 clones
            [--sizes 1G,8G] [--samples 9] [--clones 100]
  bootstorm P6: N clones of one image all read it at once, cold: engine vs N qemu-nbd over N full copies
            [--vms 32] [--size 512M]
  cleaner   overwrite a volume at random 3 times; write p99 while cleaning, time to physical ≤ 1.3x logical
            [--size 4G] [--seconds 60 (idle time allowed)]
  dedup     inline dedup: N dedup volumes written at once with one random image (physical size),
            then the blender without and with dedup
            [--vms 16 (volumes)] [--size 256M] [--seconds 15] (blender: 64 VMs)
  randread  4 KiB random reads over prefilled disks, cold: engine vs per-file qemu-nbd
            [--vms 16] [--seconds 15] [--prefill 256M] [--iodepth 8] [--volume-size 1G]

common options:
  --dir PATH             make the scratch directory inside PATH (default: <repo>/.bench)
  --keep                 keep the scratch directory (server logs, fio job files) afterwards
  --systems a,b          systems to run, of engine,perfile,nbdkit (blender: all; randread: engine,perfile)
  --perfile-cache MODE   qemu-nbd cache for per-file: writeback (default) or none (O_DIRECT)
`;

class UsageError extends Error {}

/** SIZE: bytes, or with a binary suffix K M G T (as the braid CLI takes it). */
export function parseSize(text: string): number {
  const match = /^(\d+)([KMGT]?)$/i.exec(text.trim());
  if (match === null) throw new UsageError(`bad size ${JSON.stringify(text)} (e.g. 512M, 4G)`);
  const shift = { '': 0, K: 10, M: 20, G: 30, T: 40 }[(match[2] ?? '').toUpperCase()] ?? 0;
  const bytes = Number(match[1]) * 2 ** shift;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new UsageError(`bad size ${text}`);
  return bytes;
}

function parseCount(name: string, text: string | undefined, fallback: number, min = 1): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) throw new UsageError(`--${name} needs an integer ≥ ${min}, got ${text}`);
  return value;
}

function parseSystems(text: string | undefined, fallback: readonly SystemKind[]): SystemKind[] {
  if (text === undefined) return [...fallback];
  const names = text.split(',').map((s) => s.trim());
  for (const name of names) {
    if (!(SYSTEM_KINDS as readonly string[]).includes(name)) {
      throw new UsageError(`unknown system ${name}; choose from ${SYSTEM_KINDS.join(',')}`);
    }
  }
  return names as SystemKind[];
}

function parsePerFileCache(text: string | undefined): PerFileCache {
  if (text === undefined || text === 'writeback') return 'writeback';
  if (text === 'none') return 'none';
  throw new UsageError(`--perfile-cache is writeback or none, got ${text}`);
}

const OPTIONS = {
  vms: { type: 'string' },
  seconds: { type: 'string' },
  warmup: { type: 'string' },
  'volume-size': { type: 'string' },
  size: { type: 'string' },
  prefill: { type: 'string' },
  sizes: { type: 'string' },
  samples: { type: 'string' },
  clones: { type: 'string' },
  iodepth: { type: 'string' },
  dir: { type: 'string' },
  keep: { type: 'boolean' },
  systems: { type: 'string' },
  'perfile-cache': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** Options each command accepts besides the common ones; anything else is a usage error. */
const COMMAND_OPTIONS: Record<string, readonly string[]> = {
  blender: ['vms', 'seconds', 'warmup', 'volume-size'],
  seqwrite: ['seconds', 'size', 'iodepth'],
  randread: ['vms', 'seconds', 'prefill', 'iodepth', 'volume-size'],
  clone: ['sizes', 'samples', 'clones'],
  bootstorm: ['vms', 'size'],
  cleaner: ['size', 'seconds'],
  dedup: ['vms', 'size', 'seconds'],
};
const COMMON_OPTIONS = ['dir', 'keep', 'systems', 'perfile-cache', 'help'];

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  const command = positionals[0];
  if (values.help === true || command === undefined) {
    process.stdout.write(USAGE);
    return command === undefined && values.help !== true ? 2 : 0;
  }
  const allowed = COMMAND_OPTIONS[command];
  if (allowed === undefined || positionals.length > 1) throw new UsageError(`unknown command ${positionals.join(' ')}`);
  for (const key of Object.keys(values)) {
    if (!allowed.includes(key) && !COMMON_OPTIONS.includes(key)) throw new UsageError(`${command} has no option --${key}`);
  }

  // Parse every value before anything is created, so a usage error leaves nothing behind.
  const defaultSystems: readonly SystemKind[] = command === 'randread' ? ['engine', 'perfile'] : SYSTEM_KINDS;
  const systems = parseSystems(values.systems, defaultSystems);
  const perFileCache = parsePerFileCache(values['perfile-cache']);
  const seconds = parseCount('seconds', values.seconds, 15);
  const volumeSizeBytes = parseSize(values['volume-size'] ?? '1G');
  let runCommand: (ctx: BenchContext) => Promise<boolean>;
  switch (command) {
    case 'blender': {
      const opts = { vms: parseCount('vms', values.vms, 64), seconds, warmupSeconds: parseCount('warmup', values.warmup, 2, 0), volumeSizeBytes };
      runCommand = (ctx) => blender(ctx, opts);
      break;
    }
    case 'seqwrite': {
      const opts = { seconds, sizeBytes: parseSize(values.size ?? '4G'), iodepth: parseCount('iodepth', values.iodepth, 4) };
      runCommand = (ctx) => seqwrite(ctx, opts);
      break;
    }
    case 'randread': {
      const opts = {
        vms: parseCount('vms', values.vms, 16),
        seconds,
        prefillBytes: parseSize(values.prefill ?? '256M'),
        iodepth: parseCount('iodepth', values.iodepth, 8),
        volumeSizeBytes,
      };
      if (opts.prefillBytes > volumeSizeBytes) throw new UsageError('--prefill is larger than --volume-size');
      runCommand = (ctx) => randread(ctx, opts);
      break;
    }
    case 'cleaner': {
      const opts = { sizeBytes: parseSize(values.size ?? '4G'), idleSeconds: parseCount('seconds', values.seconds, 60) };
      runCommand = (ctx) => cleaner(ctx, opts);
      break;
    }
    case 'bootstorm': {
      const opts = { vms: parseCount('vms', values.vms, 32), imageBytes: parseSize(values.size ?? '512M') };
      runCommand = (ctx) => bootstorm(ctx, opts);
      break;
    }
    case 'dedup': {
      const opts = {
        volumes: parseCount('vms', values.vms, 16),
        imageBytes: parseSize(values.size ?? '256M'),
        blender: { vms: 64, seconds, warmupSeconds: 2, volumeSizeBytes },
      };
      runCommand = (ctx) => dedup(ctx, opts);
      break;
    }
    case 'clone': {
      const opts = {
        templateBytes: (values.sizes ?? '1G,8G').split(',').map(parseSize),
        samples: parseCount('samples', values.samples, 9),
        spaceClones: parseCount('clones', values.clones, 100),
      };
      runCommand = (ctx) => clone(ctx, opts);
      break;
    }
    default:
      throw new UsageError(`unknown command ${command}`);
  }

  installExitHooks();
  const ctx: BenchContext = {
    repoDir: REPO_DIR,
    scratchDir: makeScratchDir(REPO_DIR, command, values.dir, values.keep === true),
    systems,
    perFileCache,
  };
  process.stdout.write(`${(await describeMachine(ctx.scratchDir, REPO_DIR)).join('\n')}\n`);
  process.stdout.write(`per-file:   qemu-nbd ${qemuNbdArgs('VM.sock', 'VM', 'VM.raw', perFileCache).join(' ')}\n`);
  process.stdout.write(`nbdkit:     nbdkit ${nbdkitArgs('kit.sock', 'files/').join(' ')}\n\n`);
  return (await runCommand(ctx)) ? 0 : 1;
}

// Run only when executed, not when a test imports parseSize.
if (import.meta.filename === resolve(process.argv[1] ?? '')) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      if (error instanceof UsageError || (error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS'))) {
        process.stderr.write(`bench: ${error.message}\n\n${USAGE}`);
        process.exit(2);
      }
      process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    },
  );
}
