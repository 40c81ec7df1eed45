// The machine description printed before every run, so a result pasted into
// docs/benchmarks.md says what it was measured on. Every probe is best effort: a missing tool
// prints "unknown" rather than failing the benchmark.

import { readFileSync } from 'node:fs';
import os from 'node:os';
import { run } from './proc.ts';

async function firstLine(command: string, args: string[]): Promise<string> {
  const out = await run(command, args, { timeoutMs: 10_000 });
  const line = (out.stdout.trim() || out.stderr.trim()).split('\n')[0]?.trim();
  return out.code === 0 && line ? line : 'unknown';
}

function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    return line?.split(':')[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  } catch {
    return os.cpus()[0]?.model ?? 'unknown';
  }
}

async function filesystem(dir: string): Promise<string[]> {
  const mount = await firstLine('findmnt', ['-n', '-o', 'SOURCE,FSTYPE,OPTIONS', '--target', dir]);
  const df = await run('df', ['-T', '-h', dir], { timeoutMs: 10_000 });
  const dfLine = df.code === 0 ? (df.stdout.trim().split('\n')[1] ?? 'unknown') : 'unknown';
  const source = mount.split(/\s+/)[0] ?? '';
  // The block device under the filesystem: rotational or not, and its model, when lsblk knows.
  const device = source.startsWith('/dev/')
    ? await firstLine('lsblk', ['-n', '-d', '-o', 'NAME,ROTA,SIZE,MODEL', source])
    : 'n/a';
  return [`mount:      ${mount}`, `df -T:      ${dfLine.replace(/\s+/g, ' ')}`, `device:     ${device} (NAME ROTA SIZE MODEL)`];
}

async function repoRevision(repoDir: string): Promise<string> {
  const head = await firstLine('git', ['-C', repoDir, 'rev-parse', '--short', 'HEAD']);
  const status = await run('git', ['-C', repoDir, 'status', '--porcelain', '--untracked-files=no'], { timeoutMs: 10_000 });
  return status.code === 0 && status.stdout.trim() !== '' ? `${head} (with uncommitted changes)` : head;
}

/** Lines describing this machine, the scratch filesystem and the tools' versions. */
export async function describeMachine(scratchDir: string, repoDir: string): Promise<string[]> {
  const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  const [fs, fio, qemuNbd, nbdkit, revision] = await Promise.all([
    filesystem(scratchDir),
    firstLine('fio', ['--version']),
    firstLine('qemu-nbd', ['--version']),
    firstLine('nbdkit', ['--version']),
    repoRevision(repoDir),
  ]);
  return [
    `machine`,
    `cpu:        ${cpuModel()} x ${os.availableParallelism()} (logical CPUs available)`,
    `memory:     ${gib(os.totalmem())}`,
    `kernel:     ${os.type()} ${os.release()}`,
    `scratch:    ${scratchDir}`,
    ...fs,
    `tools:      ${fio}; ${qemuNbd}; ${nbdkit}; node ${process.version}`,
    `braid:      ${revision}`,
  ];
}
