/**
 * Helpers for the integration tests: an engine (`bin/braid serve`) in a fresh temporary pool
 * directory, the CLI, and external programs, always started with argument arrays (never a
 * shell string built from data). Every engine started here is killed and its directory removed
 * by `cleanup()`; `useEngine()` wires that into afterAll, and prints the tail of the daemon's log
 * when a test fails.
 */
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll } from 'vitest';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BRAID_BIN = join(REPO_ROOT, 'bin', 'braid');

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

// ---- Running programs --------------------------------------------------------------------

export interface RunResult {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Runs a program to completion; never throws for a non-zero exit (the result says). */
export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      file,
      args,
      {
        timeout: opts.timeoutMs ?? 120_000,
        maxBuffer: 64 * MiB,
        env: opts.env ?? process.env,
        cwd: opts.cwd ?? REPO_ROOT,
        killSignal: 'SIGKILL',
      },
      (err, stdout, stderr) => {
        if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
          // The program could not be started at all (ENOENT, EACCES).
          reject(err);
          return;
        }
        const e = err as (Error & { code?: number; signal?: string | null }) | null;
        resolvePromise({
          code: e ? (typeof e.code === 'number' ? e.code : -1) : 0,
          signal: e?.signal ?? null,
          stdout: String(stdout),
          stderr: String(stderr),
        });
      },
    );
  });
}

export function describeRun(file: string, args: readonly string[], r: RunResult): string {
  return (
    `${file} ${args.join(' ')}\n  exit ${r.code}${r.signal ? ` (signal ${r.signal})` : ''}\n` +
    `  stdout: ${r.stdout.trim().slice(-4000)}\n  stderr: ${r.stderr.trim().slice(-4000)}`
  );
}

/** Runs a program and throws, with its output, unless it exits 0. */
export async function runOk(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const r = await run(file, args, opts);
  if (r.code !== 0) throw new Error(`command failed: ${describeRun(file, args, r)}`);
  return r;
}

/**
 * qemu-io -f raw with the given commands. qemu-io 7 exits 0 even when a `read -P` finds a
 * mismatch or a request fails, so the output is checked too.
 */
export async function qemuIo(uri: string, commands: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const args = ['-f', 'raw'];
  for (const c of commands) args.push('-c', c);
  args.push(uri);
  const r = await run('qemu-io', args, opts);
  const out = `${r.stdout}\n${r.stderr}`;
  const problem = /Pattern verification failed|failed|error|Invalid|Could not|Cannot|refused/i.exec(out);
  if (r.code !== 0 || problem) {
    throw new Error(`qemu-io reported a problem (${problem ? problem[0] : `exit ${r.code}`}): ${describeRun('qemu-io', args, r)}`);
  }
  return r;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` every `intervalMs` until it returns true, at most `timeoutMs`; then throws. */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000, intervalMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

// ---- Seeded randomness (so failures print a seed) ------------------------------------------

/** mulberry32: small, fast, good enough to drive test choices. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomInt(rand: () => number, lo: number, hiExclusive: number): number {
  return lo + Math.floor(rand() * (hiExclusive - lo));
}

// ---- Temporary directories ----------------------------------------------------------------

const tempDirs = new Set<string>();

/** A fresh directory under os.tmpdir(); removed by cleanup(). Short, so socket paths fit. */
export async function makeTempDir(prefix = 'braid-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

// ---- The engine ---------------------------------------------------------------------------

const engines = new Set<Engine>();

// Should the test process exit without running afterAll (a worker torn down on timeout), no
// daemon may outlive it.
process.once('exit', () => {
  for (const e of engines) {
    const pid = e.pid;
    if (e.running && pid !== undefined) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
});

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One `braid serve --data DIR` process at a time on one pool directory. */
export class Engine {
  readonly dir: string;
  readonly logPath: string;
  readonly extraArgs: readonly string[];
  private proc: ChildProcess | null = null;
  private exited: Promise<ExitStatus> | null = null;
  private starts = 0;

  /** `dir` is the pool directory; the log goes to `logPath` (outside the pool by default). */
  constructor(dir: string, extraArgs: readonly string[] = [], logPath = join(dirname(dir), `${basename(dir)}.log`)) {
    this.dir = dir;
    this.logPath = logPath;
    this.extraArgs = extraArgs;
    engines.add(this);
  }

  /** A new engine on a new temporary pool directory. */
  static async create(extraArgs: readonly string[] = []): Promise<Engine> {
    const root = await makeTempDir('braid-');
    const dir = join(root, 'pool');
    await mkdir(dir);
    return new Engine(dir, extraArgs, join(root, 'engine.log'));
  }

  get nbdSocket(): string {
    return join(this.dir, 'nbd.sock');
  }

  get engineSocket(): string {
    return join(this.dir, 'engine.sock');
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get running(): boolean {
    return this.proc !== null;
  }

  uri(name: string): string {
    return `nbd+unix:///${name}?socket=${this.nbdSocket}`;
  }

  /** Starts the daemon (stdout and stderr appended to the log) and waits until it is ready. */
  async start(): Promise<void> {
    this.spawn();
    try {
      await this.waitReady();
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- engine log (start #${this.starts}) ---\n${this.logTail(40)}`);
    }
  }

  /** Starts the daemon without waiting for it to be ready (to crash it during recovery). */
  spawn(): void {
    if (this.proc) throw new Error('engine already running');
    this.starts++;
    const fd = openSync(this.logPath, 'a');
    let proc: ChildProcess;
    try {
      proc = spawn(BRAID_BIN, ['serve', '--data', this.dir, ...this.extraArgs], {
        cwd: REPO_ROOT,
        stdio: ['ignore', fd, fd],
      });
    } finally {
      closeSync(fd);
    }
    this.proc = proc;
    this.exited = new Promise((res) => {
      proc.once('exit', (code, signal) => {
        if (this.proc === proc) this.proc = null;
        res({ code, signal });
      });
    });
  }

  /** Both sockets exist and `braid volume ls` succeeds; fails early if the daemon exits. */
  async waitReady(timeoutMs = 60_000): Promise<void> {
    let exitedEarly: ExitStatus | null = null;
    void this.exited?.then((s) => (exitedEarly = s));
    await waitFor(
      'the engine to be ready',
      async () => {
        if (exitedEarly) throw new Error(`engine exited during start-up (code ${exitedEarly.code}, signal ${exitedEarly.signal})`);
        if (!existsSync(this.nbdSocket) || !existsSync(this.engineSocket)) return false;
        const r = await this.cli(['volume', 'ls']);
        return r.code === 0;
      },
      timeoutMs,
      100,
    );
  }

  /** SIGTERM and wait for exit; returns how it exited. */
  async stop(timeoutMs = 60_000): Promise<ExitStatus> {
    const proc = this.proc;
    const exited = this.exited;
    if (!proc || !exited) throw new Error('engine not running');
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** kill -9, and wait until the process is gone. */
  async kill9(): Promise<ExitStatus> {
    const proc = this.proc;
    const exited = this.exited;
    if (!proc || !exited) throw new Error('engine not running');
    proc.kill('SIGKILL');
    return exited;
  }

  /** Exit status if the daemon has exited since start, else null (without waiting). */
  async exitedStatus(): Promise<ExitStatus | null> {
    if (!this.exited) return null;
    return Promise.race([this.exited, sleep(0).then(() => null)]);
  }

  /** `bin/braid ARGS --data DIR` (the --data is appended). */
  cli(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(BRAID_BIN, [...args, '--data', this.dir], { timeoutMs: 60_000, ...opts });
  }

  async cliOk(args: readonly string[]): Promise<RunResult> {
    const r = await this.cli(args);
    if (r.code !== 0) throw new Error(`braid failed: ${describeRun(BRAID_BIN, [...args, '--data', this.dir], r)}`);
    return r;
  }

  async createVolume(name: string, size: string): Promise<void> {
    await this.cliOk(['volume', 'create', name, '--size', size]);
  }

  async listVolumes(): Promise<{ name: string; sizeBytes: number }[]> {
    const r = await this.cliOk(['volume', 'ls', '--json']);
    const parsed = JSON.parse(r.stdout) as { volumes: { name: string; sizeBytes: number }[] };
    return parsed.volumes.map((v) => ({ name: v.name, sizeBytes: v.sizeBytes })).sort((a, b) => a.name.localeCompare(b.name));
  }

  async stats(): Promise<Record<string, unknown>> {
    const r = await this.cliOk(['stats', '--json']);
    return JSON.parse(r.stdout) as Record<string, unknown>;
  }

  /** Log lines at level error or fatal (pino levels 50 and 60) since this engine's first start. */
  errorLogLines(): string[] {
    let text: string;
    try {
      text = readFileSync(this.logPath, 'utf8');
    } catch {
      return [];
    }
    return text.split('\n').filter((line) => {
      if (!line.startsWith('{')) return false;
      try {
        return ((JSON.parse(line) as { level?: number }).level ?? 0) >= 50;
      } catch {
        return false;
      }
    });
  }

  logTail(lines = 40): string {
    try {
      const text = readFileSync(this.logPath, 'utf8');
      return text.split('\n').slice(-lines - 1).join('\n');
    } catch {
      return '(no engine log)';
    }
  }

  /** Kills the daemon if it still runs (SIGKILL; tests that care stop it themselves). */
  async dispose(): Promise<void> {
    const proc = this.proc;
    if (proc && this.exited) {
      proc.kill('SIGKILL');
      await this.exited;
    }
    engines.delete(this);
  }
}

/** Kills every engine still running and removes every temporary directory. */
export async function cleanup(): Promise<void> {
  for (const e of [...engines]) await e.dispose();
  for (const d of [...tempDirs]) {
    await rm(d, { recursive: true, force: true });
    tempDirs.delete(d);
  }
}

/**
 * For a describe block (or a file): an engine on a fresh pool, started in beforeAll, killed and
 * removed in afterAll even when tests fail; the log tail is printed after each failed test.
 * Returns a getter because the engine exists only once beforeAll has run.
 */
export function useEngine(extraArgs: readonly string[] = []): () => Engine {
  let engine: Engine | null = null;
  beforeAll(async () => {
    engine = await Engine.create(extraArgs);
    await engine.start();
  });
  afterEach(({ task }) => {
    if (task.result?.state === 'fail' && engine) {
      console.error(`--- tail of ${engine.logPath} after "${task.name}" failed ---\n${engine.logTail(60)}`);
    }
  });
  afterAll(async () => {
    await cleanup();
  });
  return () => {
    if (!engine) throw new Error('engine not started (beforeAll failed?)');
    return engine;
  };
}

/** Prints the logs of every live engine after a failed test; for files that manage engines. */
export function printLogsOnFailure(): void {
  afterEach(({ task }) => {
    if (task.result?.state !== 'fail') return;
    for (const e of engines) console.error(`--- tail of ${e.logPath} after "${task.name}" failed ---\n${e.logTail(60)}`);
  });
  afterAll(async () => {
    await cleanup();
  });
}
