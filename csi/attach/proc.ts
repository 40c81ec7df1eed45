/**
 * What /proc says about processes: whether a pid still runs, its command line, and which
 * processes hold a block device open. Pids are reused, so a recorded pid is only trusted
 * together with a check of its command line.
 *
 * A zombie counts as exited: a helper we started and that has exited may stay a zombie until
 * its parent (us, or pid 1 after a plugin restart) reaps it, but it serves nothing.
 */
import { readdir, readFile, stat } from 'node:fs/promises';

const PROC = '/proc';

/** The argv of `pid`, or undefined when it is gone or a zombie (a zombie's cmdline is empty). */
export async function processArgv(pid: number): Promise<string[] | undefined> {
  let text: string;
  try {
    text = await readFile(`${PROC}/${pid}/cmdline`, 'utf8');
  } catch {
    return undefined;
  }
  if (text === '') return undefined;
  return text.replace(/\0$/, '').split('\0');
}

/** Running (not zombie) processes whose argv satisfies `matches`. */
export async function findProcesses(matches: (argv: readonly string[]) => boolean): Promise<number[]> {
  const found: number[] = [];
  for (const pid of await listPids()) {
    const argv = await processArgv(pid);
    if (argv && matches(argv)) found.push(pid);
  }
  return found;
}

/** Pids of processes with a file descriptor on the block device `rdev`. */
export async function processesWithDeviceOpen(rdev: number): Promise<number[]> {
  const found: number[] = [];
  for (const pid of await listPids()) {
    if (pid === process.pid) continue;
    let fds: string[];
    try {
      fds = await readdir(`${PROC}/${pid}/fd`);
    } catch {
      continue; // gone, or a kernel thread
    }
    for (const fd of fds) {
      // stat follows the fd's magic link to the open file: this sees the device even when it
      // was opened through a bind-mounted node under another name.
      const s = await stat(`${PROC}/${pid}/fd/${fd}`).catch(() => undefined);
      if (s?.isBlockDevice() && s.rdev === rdev) {
        found.push(pid);
        break;
      }
    }
  }
  return found;
}

async function listPids(): Promise<number[]> {
  const names = await readdir(PROC);
  return names.filter((n) => /^\d+$/.test(n)).map(Number);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls until `pid` is gone (or a zombie); false if it still runs after `timeoutMs`. */
export async function waitForExit(pid: number, timeoutMs: number, intervalMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await processArgv(pid)) === undefined) return true;
    if (Date.now() >= deadline) return false;
    await sleep(intervalMs);
  }
}
