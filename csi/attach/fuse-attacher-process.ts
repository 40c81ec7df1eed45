/**
 * Starting and stopping braid-fuse, the process that serves one export as a FUSE file.
 *
 * Lifetime: braid-fuse is started with the running Node, detached (its own session), its stdio
 * on a log file, and unref'd, so it outlives the process that started it: `braid attach` exits at
 * once, and a node plugin that restarts finds it still serving. It ends when its mount point is
 * unmounted, which is the clean way to stop it; it ignores SIGTERM while mounted. Signals are a
 * last resort, for a braid-fuse whose mount is already gone.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { AttachError } from './errors.ts';
import type { Exec } from './exec.ts';
import { controlRequest } from './fuse/control.ts';
import type { ServerStatus } from './fuse/control.ts';
import { THREADPOOL_SIZE } from './fuse/fuse-server.ts';
import { BRAID_FUSE_ENTRY } from './fuse/layout.ts';
import type { FuseLayout } from './fuse/layout.ts';
import { sleep, waitForExit } from './proc.ts';

/** braid-fuse connects, mounts and answers INIT in well under a second; this bounds a hung start. */
export const FUSE_READY_TIMEOUT_MS = 20_000;
/** After the unmount, braid-fuse flushes and exits. */
export const FUSE_EXIT_TIMEOUT_MS = 35_000;
/** A live braid-fuse answers its control socket in milliseconds, even while the engine is away. */
export const CONTROL_TIMEOUT_MS = 5_000;
const POLL_INTERVAL_MS = 50;
const LOG_TAIL_BYTES = 2_000;

export interface FuseServerSettings {
  reconnectTimeoutMs: number;
  replayLimitBytes: number;
}

export function braidFuseArgs(layout: FuseLayout, nbdSocket: string, settings: FuseServerSettings): string[] {
  return [
    BRAID_FUSE_ENTRY,
    '--nbd-socket', nbdSocket,
    '--export', layout.exportName,
    '--mount', layout.mountDir,
    '--control', layout.controlSocket,
    '--reconnect-timeout-ms', String(settings.reconnectTimeoutMs),
    '--replay-limit-bytes', String(settings.replayLimitBytes),
  ];
}

/** Starts braid-fuse and resolves with its pid once it answers on its control socket. */
export async function startBraidFuse(layout: FuseLayout, nbdSocket: string, settings: FuseServerSettings): Promise<number> {
  const logFd = openSync(layout.logFile, 'w', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, braidFuseArgs(layout, nbdSocket, settings), {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      // A small, explicit environment: nothing of the plugin's (NODE_OPTIONS, loaders) leaks in.
      env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', UV_THREADPOOL_SIZE: String(THREADPOOL_SIZE) },
    });
  } finally {
    closeSync(logFd);
  }
  child.unref();
  let ended: string | undefined;
  child.once('error', (err) => (ended = `could not start: ${err.message}`));
  child.once('exit', (code, signal) => (ended = `exited (${signal ?? `status ${code}`})`));

  const deadline = Date.now() + FUSE_READY_TIMEOUT_MS;
  for (;;) {
    const status = await serverStatus(layout.controlSocket, POLL_INTERVAL_MS * 20).catch(() => undefined);
    if (status !== undefined && child.pid !== undefined && status.pid === child.pid) return child.pid;
    if (ended !== undefined) throw new AttachError('ATTACH_FAILED', `braid-fuse ${ended} before serving ${layout.exportName}${await logTail(layout.logFile)}`);
    if (Date.now() >= deadline) {
      // Not mounted yet, or hung: SIGKILL, since it ignores SIGTERM while mounted.
      child.kill('SIGKILL');
      throw new AttachError('ATTACH_FAILED', `braid-fuse did not serve ${layout.exportName} within ${FUSE_READY_TIMEOUT_MS} ms${await logTail(layout.logFile)}`);
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

/** The server's status, or a rejection when nothing answers (not started, gone, or hung). */
export async function serverStatus(controlSocket: string, timeoutMs = CONTROL_TIMEOUT_MS): Promise<ServerStatus> {
  const answer = await controlRequest<ServerStatus>(controlSocket, { op: 'status' }, timeoutMs);
  if (!answer.ok) throw new Error(answer.error);
  const status: ServerStatus & { ok?: boolean } = { ...answer };
  delete status.ok;
  return status;
}

/** Asks the server to read the export's size again and tell the kernel; resolves with the new size. */
export async function resizeServer(controlSocket: string): Promise<number> {
  // Generous: the size query opens a second NBD connection, which waits for an engine that restarts.
  const answer = await controlRequest<{ sizeBytes: number }>(controlSocket, { op: 'resize' }, 30_000);
  if (!answer.ok) throw new Error(answer.error);
  return answer.sizeBytes;
}

/** ": <last lines of the log>" for an error message, or "" when the log is empty. */
export async function logTail(logFile: string): Promise<string> {
  const text = (await readFile(logFile, 'utf8').catch(() => '')).trim();
  return text === '' ? '' : `: ${text.slice(-LOG_TAIL_BYTES).replace(/\s*\n\s*/g, ' / ')}`;
}

/** umount MOUNTDIR: asks braid-fuse to stop. Fails (EBUSY) while the file is in use. */
export async function unmountBraidFuse(mountDir: string, exec: Exec): Promise<void> {
  await exec('umount', [mountDir]);
}

/**
 * Waits for braid-fuse to exit after its unmount; escalates to SIGTERM, then SIGKILL, if it does
 * not (it serves nothing any more then). Returns how it ended, for the log.
 */
export async function reapBraidFuse(pid: number): Promise<'exited' | 'terminated' | 'killed'> {
  if (await waitForExit(pid, FUSE_EXIT_TIMEOUT_MS, POLL_INTERVAL_MS)) return 'exited';
  signal(pid, 'SIGTERM');
  if (await waitForExit(pid, 2_000, POLL_INTERVAL_MS)) return 'terminated';
  signal(pid, 'SIGKILL');
  await waitForExit(pid, 2_000, POLL_INTERVAL_MS);
  return 'killed';
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Already gone.
  }
}
