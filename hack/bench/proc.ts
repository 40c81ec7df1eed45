// Child processes for the benchmark: every server and every fio run is spawned with an argument
// array (never a shell string), registered, and killed when the benchmark exits for any reason
// (normal end, thrown error, Ctrl-C, SIGTERM). Scratch directories are registered the same way
// so an interrupted run leaves nothing behind.

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Servers and tools still running; killed with SIGKILL on exit. */
const live = new Set<ChildProcess>();
/** Synchronous cleanups (scratch directories) run once, last in, first out. */
const cleanups: Array<() => void> = [];
let exitHooksInstalled = false;

/** How long a server may take to create its sockets before we call it failed. */
export const SOCKET_WAIT_MS = 30_000;
const SOCKET_POLL_MS = 50;
/** How long a server may take to exit after SIGTERM before it gets SIGKILL. */
const STOP_GRACE_MS = 10_000;

export function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  // 'exit' handlers must be synchronous: kill() and rmSync() are.
  process.on('exit', runCleanupsNow);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      process.stderr.write(`\nbench: ${signal}, stopping servers and removing scratch files\n`);
      // Kill and reap the children before exiting, so none is left a zombie or still holding
      // files in the scratch directory when it is removed. Bounded: exit regardless after 3 s.
      void killAndReap(3_000).finally(() => process.exit(130));
    });
  }
}

async function killAndReap(timeoutMs: number): Promise<void> {
  const exits = [...live]
    .filter((child) => isRunning(child))
    .map((child) => {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      return exited;
    });
  await Promise.race([Promise.all(exits), sleep(timeoutMs)]);
}

function runCleanupsNow(): void {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  live.clear();
  while (cleanups.length > 0) {
    const cleanup = cleanups.pop();
    try {
      cleanup?.();
    } catch (error) {
      process.stderr.write(`bench: cleanup failed: ${String(error)}\n`);
    }
  }
}

export function onCleanup(cleanup: () => void): void {
  cleanups.push(cleanup);
}

export interface Server {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logPath: string;
}

/**
 * Starts a long-running server with stdout and stderr appended to logPath (a file, so a chatty
 * server can never block on a full pipe while we are busy running fio).
 */
export function spawnServer(name: string, command: string, args: string[], logPath: string): Server {
  const logFd = openSync(logPath, 'a');
  try {
    const child = spawn(command, args, { stdio: ['ignore', logFd, logFd] });
    live.add(child);
    child.on('exit', () => live.delete(child));
    // A missing binary reports through 'error'; keep it from becoming an uncaught exception,
    // waitForSockets notices that the process is gone.
    child.on('error', () => live.delete(child));
    return { name, child, logPath };
  } finally {
    closeSync(logFd);
  }
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null && child.pid !== undefined;
}

/** Last lines of a server log, for error messages. */
export function logTail(logPath: string, lines = 15): string {
  if (!existsSync(logPath)) return '(no log)';
  const text = readFileSync(logPath, 'utf8').trimEnd();
  return text.split('\n').slice(-lines).join('\n') || '(empty log)';
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

/** Polls until every path is a unix socket; fails fast if the server died. Bounded by timeoutMs. */
export async function waitForSockets(server: Server, paths: string[], timeoutMs = SOCKET_WAIT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (paths.every(isSocket)) return;
    if (!isRunning(server.child)) {
      throw new Error(`${server.name} exited before creating its sockets:\n${logTail(server.logPath)}`);
    }
    if (Date.now() > deadline) {
      const missing = paths.filter((p) => !isSocket(p)).join(', ');
      throw new Error(`${server.name}: no socket after ${timeoutMs} ms: ${missing}\n${logTail(server.logPath)}`);
    }
    await sleep(SOCKET_POLL_MS);
  }
}

/** SIGTERM, then SIGKILL after a grace period. Resolves once the process is gone. */
export async function stopServer(server: Server, graceMs = STOP_GRACE_MS): Promise<void> {
  const child = server.child;
  if (!isRunning(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a short command to completion, capturing its output. Never throws for a non-zero exit. */
export function run(command: string, args: string[], options: { timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    const timer =
      options.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    const finish = (code: number | null, extra = ''): void => {
      if (timer !== undefined) clearTimeout(timer);
      live.delete(child);
      resolve({
        code,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8') + extra,
      });
    };
    child.on('error', (error) => finish(null, String(error)));
    child.on('close', (code) => finish(code));
  });
}

/** Runs a command and throws with its stderr when it fails. */
export async function runOk(command: string, args: string[], options: { timeoutMs?: number } = {}): Promise<string> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    const detail = (result.stderr.trim() || result.stdout.trim()).split('\n').slice(-10).join('\n');
    throw new Error(`${command} ${args.join(' ')} failed (exit ${String(result.code)}): ${detail}`);
  }
  return result.stdout;
}

/** Removes a directory tree; used for scratch directories only. */
export function removeTree(path: string): void {
  rmSync(path, { recursive: true, force: true });
}

/** Flushes every dirty page of the machine, so one system's writeback does not tax the next. */
export async function syncDisks(): Promise<void> {
  await runOk('sync', [], { timeoutMs: 300_000 });
}
