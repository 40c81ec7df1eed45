/**
 * Starting and stopping nbdfuse, the process that serves one export as a FUSE file.
 *
 * Lifetime: nbdfuse is started detached (its own session, stdio on a log file) and unref'd, so
 * it outlives the process that started it: `braid attach` exits at once, and a node plugin that
 * restarts finds it still serving. It ends when its mount point is unmounted (fusermount3 -u),
 * which is the only clean way to stop it (nbdfuse(1): "you mustn't try to kill nbdfuse").
 * Signals are a last resort, for an nbdfuse whose mount is already gone.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { AttachError } from './errors.ts';
import { execTool } from './exec.ts';
import type { Exec } from './exec.ts';
import type { NbdfuseLayout } from './nbdfuse-layout.ts';
import { nbdfuseArgs } from './nbdfuse-layout.ts';
import { sleep, waitForExit } from './proc.ts';

/** nbdfuse connects and mounts in well under a second; this bounds a hung connect. */
export const NBDFUSE_READY_TIMEOUT_MS = 15_000;
/** After fusermount3 -u, nbdfuse finishes in-flight requests and exits. */
export const NBDFUSE_EXIT_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 50;
/** How much of nbdfuse's log an error message carries. */
const LOG_TAIL_BYTES = 2_000;

/** Starts nbdfuse on `uri` and resolves with its pid once it serves (its pid file exists). */
export async function startNbdfuse(layout: NbdfuseLayout, uri: string, binary = 'nbdfuse'): Promise<number> {
  await rm(layout.pidFile, { force: true });
  const logFd = openSync(layout.logFile, 'w', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(binary, nbdfuseArgs(layout, uri), { detached: true, stdio: ['ignore', logFd, logFd] });
  } finally {
    closeSync(logFd);
  }
  child.unref();
  let ended: string | undefined;
  child.once('error', (err: NodeJS.ErrnoException) => {
    ended = err.code === 'ENOENT' ? 'not installed' : `could not start: ${err.message}`;
  });
  child.once('exit', (code, signal) => (ended = `exited (${signal ?? `status ${code}`})`));

  const deadline = Date.now() + NBDFUSE_READY_TIMEOUT_MS;
  for (;;) {
    const pid = await readPidFile(layout.pidFile);
    if (pid !== undefined) {
      await rm(layout.pidFile, { force: true });
      return pid;
    }
    if (ended !== undefined) {
      const code = ended === 'not installed' ? 'NOT_SUPPORTED' : 'ATTACH_FAILED';
      throw new AttachError(code, `nbdfuse ${ended} before serving ${uri}${await logTail(layout.logFile)}`);
    }
    if (Date.now() >= deadline) {
      child.kill('SIGTERM');
      throw new AttachError('ATTACH_FAILED', `nbdfuse did not serve ${uri} within ${NBDFUSE_READY_TIMEOUT_MS} ms${await logTail(layout.logFile)}`);
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

async function readPidFile(path: string): Promise<number | undefined> {
  const text = await readFile(path, 'utf8').catch(() => '');
  // nbdfuse writes the file in one go, but a read may still catch it empty: retry then.
  const pid = Number(text.trim());
  return text.trim() !== '' && Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** ": <last lines of the nbdfuse log>" for an error message, or "" when the log is empty. */
export async function logTail(logFile: string): Promise<string> {
  const text = (await readFile(logFile, 'utf8').catch(() => '')).trim();
  return text === '' ? '' : `: ${text.slice(-LOG_TAIL_BYTES).replace(/\s*\n\s*/g, ' / ')}`;
}

/** fusermount3 -u MOUNTDIR: asks nbdfuse to stop. Fails (exit 1) when the file is in use. */
export async function unmountFuse(mountDir: string, exec: Exec = execTool): Promise<void> {
  await exec('fusermount3', ['-u', mountDir]);
}

/**
 * Waits for nbdfuse to exit after its unmount; escalates to SIGTERM, then SIGKILL, if it does
 * not (it no longer serves anything then). Returns how it ended, for the log.
 */
export async function reapNbdfuse(pid: number): Promise<'exited' | 'terminated' | 'killed'> {
  if (await waitForExit(pid, NBDFUSE_EXIT_TIMEOUT_MS, POLL_INTERVAL_MS)) return 'exited';
  signal(pid, 'SIGTERM');
  if (await waitForExit(pid, NBDFUSE_EXIT_TIMEOUT_MS / 2, POLL_INTERVAL_MS)) return 'terminated';
  signal(pid, 'SIGKILL');
  await sleep(POLL_INTERVAL_MS);
  return 'killed';
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // Already gone.
  }
}
