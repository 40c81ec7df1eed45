// fio job files, runs and JSON results.
//
// Facts about fio 3.33's nbd engine (engines/nbd.c) that the benchmark relies on:
// - Each job opens its own libnbd connection to its `uri=` (one connection per VM, like a VM's
//   own virtio-blk queue), after a short probe connection in setup to learn the size.
// - `fsync=1` makes fio issue a DDIR_SYNC after every write, and the engine sends it as
//   NBD_CMD_FLUSH (nbd_aio_flush). `fdatasync=` would send DDIR_DATASYNC, which the engine
//   rejects with EINVAL, so it is never used here. Checked: nbdkit's log filter counts exactly
//   one Flush per Write.
// - The engine prints "fio: connected to NBD server" on stdout even with
//   --output-format=json, so the JSON document starts at the first line that is "{".

import { writeFileSync } from 'node:fs';
import { run } from './proc.ts';

export type FioValue = string | number;
export type FioSection = Record<string, FioValue>;

export interface FioJob {
  name: string;
  options: FioSection;
}

function checkToken(what: string, text: string): void {
  // A value with a newline or a bracket could start a new section or option: refuse it rather
  // than quote it (fio job files have no quoting).
  if (/[\n\r[\]]/.test(text) || text.length === 0) throw new Error(`bad fio ${what}: ${JSON.stringify(text)}`);
}

function sectionText(name: string, options: FioSection): string {
  checkToken('section name', name);
  const lines = [`[${name}]`];
  for (const [key, value] of Object.entries(options)) {
    checkToken('option name', key);
    checkToken(`value of ${key}`, String(value));
    lines.push(`${key}=${String(value)}`);
  }
  return lines.join('\n');
}

/** A job file: one [global] section and one section per job (per VM). */
export function jobFileText(global: FioSection, jobs: readonly FioJob[]): string {
  if (jobs.length === 0) throw new Error('a fio job file needs at least one job');
  const names = new Set(jobs.map((j) => j.name));
  if (names.size !== jobs.length) throw new Error('fio job names must be unique');
  return [sectionText('global', global), ...jobs.map((j) => sectionText(j.name, j.options))].join('\n\n') + '\n';
}

/** One NBD job per export URI, named after the VM. */
export function nbdJobs(uris: ReadonlyMap<string, string>, extra: FioSection = {}): FioJob[] {
  return [...uris].map(([vm, uri]) => ({ name: vm, options: { uri, ...extra } }));
}

/** Latency figures of one direction, in microseconds. */
export interface Latency {
  p50Us: number;
  p99Us: number;
  meanUs: number;
}

export interface DirectionResult {
  totalIos: number;
  iops: number;
  ioBytes: number;
  bandwidthBytesPerSec: number;
  runtimeMs: number;
  /** Completion latency (submission to completion). */
  clat: Latency | undefined;
}

export interface FioResult {
  read: DirectionResult;
  write: DirectionResult;
  /** Latency of the flushes (fsync=N / end_fsync), when any were issued. */
  sync: Latency | undefined;
  syncTotalIos: number;
  /** Jobs with a non-zero error code (with group_reporting, the group's first error). */
  errors: number[];
}

type Json = Record<string, unknown>;

function obj(value: unknown, what: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`fio JSON: ${what} missing`);
  return value as Json;
}

function num(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new Error(`fio JSON: ${what} is not a number`);
  return value;
}

function latencyFrom(stats: Json | undefined): Latency | undefined {
  if (stats === undefined || typeof stats['N'] === 'number' && stats['N'] === 0) return undefined;
  const percentile = stats['percentile'];
  if (percentile === undefined) return undefined;
  const p = obj(percentile, 'percentile');
  return {
    p50Us: num(p['50.000000'], 'p50') / 1000,
    p99Us: num(p['99.000000'], 'p99') / 1000,
    meanUs: num(stats['mean'], 'mean') / 1000,
  };
}

function directionFrom(value: unknown, what: string): DirectionResult {
  const d = obj(value, what);
  const totalIos = num(d['total_ios'], `${what}.total_ios`);
  return {
    totalIos,
    iops: num(d['iops'], `${what}.iops`),
    ioBytes: num(d['io_bytes'], `${what}.io_bytes`),
    bandwidthBytesPerSec: num(d['bw_bytes'], `${what}.bw_bytes`),
    runtimeMs: num(d['runtime'], `${what}.runtime`),
    clat: totalIos > 0 ? latencyFrom(obj(d['clat_ns'], `${what}.clat_ns`)) : undefined,
  };
}

/** Cuts the JSON document out of fio's stdout (the nbd engine prints lines before it). */
export function extractJson(stdout: string): string {
  const start = stdout.startsWith('{') ? 0 : stdout.indexOf('\n{') + 1;
  if (start <= 0 && !stdout.startsWith('{')) throw new Error(`no JSON in fio output: ${stdout.slice(0, 200)}`);
  return stdout.slice(start);
}

/**
 * Sums the jobs of a result. Runs use group_reporting=1, so there is one entry; summing keeps
 * the parser right for runs without it (percentiles are then those of the first job).
 */
export function parseFioJson(stdout: string): FioResult {
  const doc = obj(JSON.parse(extractJson(stdout)), 'document');
  const jobs = doc['jobs'];
  if (!Array.isArray(jobs) || jobs.length === 0) throw new Error('fio JSON: no jobs');
  const results = jobs.map((raw, i) => {
    const job = obj(raw, `jobs[${i}]`);
    const syncRaw = job['sync'] === undefined ? undefined : obj(job['sync'], 'sync');
    const syncTotal = syncRaw === undefined ? 0 : num(syncRaw['total_ios'], 'sync.total_ios');
    return {
      read: directionFrom(job['read'], 'read'),
      write: directionFrom(job['write'], 'write'),
      sync: syncTotal > 0 && syncRaw !== undefined ? latencyFrom(obj(syncRaw['lat_ns'], 'sync.lat_ns')) : undefined,
      syncTotalIos: syncTotal,
      errors: [num(job['error'], 'error')].filter((e) => e !== 0),
    };
  });
  const first = results[0] as FioResult;
  const sum = (f: (r: FioResult) => number): number => results.reduce((acc, r) => acc + f(r), 0);
  const merge = (pick: (r: FioResult) => DirectionResult): DirectionResult => ({
    totalIos: sum((r) => pick(r).totalIos),
    iops: sum((r) => pick(r).iops),
    ioBytes: sum((r) => pick(r).ioBytes),
    bandwidthBytesPerSec: sum((r) => pick(r).bandwidthBytesPerSec),
    runtimeMs: Math.max(...results.map((r) => pick(r).runtimeMs)),
    clat: pick(first).clat,
  });
  return {
    read: merge((r) => r.read),
    write: merge((r) => r.write),
    sync: first.sync,
    syncTotalIos: sum((r) => r.syncTotalIos),
    errors: results.flatMap((r) => r.errors),
  };
}

export interface FioRun {
  result: FioResult;
  /** Wall-clock time of the whole fio process, connection setup included. */
  wallMs: number;
}

/** Writes the job file and runs fio on it. Throws with fio's stderr on any failure. */
export async function runFio(jobPath: string, global: FioSection, jobs: readonly FioJob[], timeoutMs: number): Promise<FioRun> {
  writeFileSync(jobPath, jobFileText(global, jobs));
  const started = performance.now();
  const out = await run('fio', ['--output-format=json', jobPath], { timeoutMs });
  const wallMs = performance.now() - started;
  if (out.code !== 0) {
    const detail = (out.stderr.trim() || out.stdout.trim()).split('\n').slice(-10).join('\n');
    throw new Error(`fio ${jobPath} failed (exit ${String(out.code)}): ${detail}`);
  }
  const result = parseFioJson(out.stdout);
  if (result.errors.length > 0) {
    throw new Error(`fio ${jobPath}: job error ${result.errors.join(', ')}: ${out.stderr.trim().slice(-500)}`);
  }
  return { result, wallMs };
}
