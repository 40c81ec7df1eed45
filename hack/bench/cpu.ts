// CPU accounting for servers, from /proc. A process's utime+stime in /proc/PID/stat already
// covers all of its threads (qemu-nbd's AIO thread pool, nbdkit's worker threads, Node's libuv
// pool). Child processes are covered by walking the process tree at each sample, plus the
// parent's cutime+cstime, which holds the time of children that have exited and been reaped.
//
// Not covered, on purpose and stated in the README: kernel work done outside the server's own
// context, such as page-cache writeback by kworker/flush threads. That time is real but belongs to
// no server; the host-wide busy figure (from /proc/stat) shows it.

import { readdirSync, readFileSync } from 'node:fs';
import { runOk } from './proc.ts';

export interface ProcStat {
  pid: number;
  ppid: number;
  /** utime + stime of the process and all its threads, in clock ticks. */
  ownTicks: number;
  /** cutime + cstime: exited, reaped children, in clock ticks. */
  reapedChildTicks: number;
}

/**
 * Parses one /proc/PID/stat line. The command name (field 2) is in parentheses and may itself
 * contain spaces and parentheses, so fields are counted from the last ')'.
 */
export function parseProcStat(text: string): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`unexpected /proc stat line: ${text.slice(0, 80)}`);
  const pid = Number(text.slice(0, open).trim());
  // rest[0] is field 3 (state); field N is rest[N - 3].
  const rest = text.slice(close + 2).trim().split(/\s+/);
  const field = (n: number): number => {
    const value = Number(rest[n - 3]);
    if (!Number.isFinite(value)) throw new Error(`/proc stat field ${n} missing: ${text.slice(0, 80)}`);
    return value;
  };
  return {
    pid,
    ppid: field(4),
    ownTicks: field(14) + field(15),
    reapedChildTicks: field(16) + field(17),
  };
}

function readStat(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined; // The process exited between listing and reading.
  }
}

function allStats(): ProcStat[] {
  const stats: ProcStat[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(Number(entry));
    if (stat !== undefined) stats.push(stat);
  }
  return stats;
}

/** Total CPU ticks of the given processes and every live descendant. */
export function treeTicks(rootPids: readonly number[]): number {
  const stats = allStats();
  const children = new Map<number, ProcStat[]>();
  for (const stat of stats) {
    const siblings = children.get(stat.ppid) ?? [];
    siblings.push(stat);
    children.set(stat.ppid, siblings);
  }
  const byPid = new Map(stats.map((s) => [s.pid, s]));
  let ticks = 0;
  const seen = new Set<number>();
  const queue = rootPids.filter((pid) => byPid.has(pid));
  while (queue.length > 0) {
    const pid = queue.pop() as number;
    if (seen.has(pid)) continue;
    seen.add(pid);
    const stat = byPid.get(pid);
    if (stat === undefined) continue;
    ticks += stat.ownTicks + stat.reapedChildTicks;
    for (const child of children.get(pid) ?? []) queue.push(child.pid);
  }
  return ticks;
}

let clockTicksCache: number | undefined;

/** sysconf(_SC_CLK_TCK), read once through getconf (Node has no sysconf binding). */
export async function clockTicksPerSecond(): Promise<number> {
  if (clockTicksCache === undefined) {
    const value = Number((await runOk('getconf', ['CLK_TCK'])).trim());
    if (!Number.isInteger(value) || value <= 0) throw new Error(`getconf CLK_TCK gave ${value}`);
    clockTicksCache = value;
  }
  return clockTicksCache;
}

/** Busy and total jiffies of the whole machine, from the first line of /proc/stat. */
export interface HostTicks {
  busy: number;
  total: number;
}

export function parseHostStat(text: string): HostTicks {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (line === undefined) throw new Error('no cpu line in /proc/stat');
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal [guest guest_nice, already inside user/nice]
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = values;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

export function hostTicks(): HostTicks {
  return parseHostStat(readFileSync('/proc/stat', 'utf8'));
}

/** A CPU measurement window over a set of server processes. */
export interface CpuWindow {
  finish(): CpuUsage;
}

export interface CpuUsage {
  /** CPU seconds of the servers, threads and children included. */
  serverSeconds: number;
  /**
   * CPU seconds of everything else this benchmark started in the window: fio (the client), and
   * this process, which sleeps while fio runs. The servers are children of this process too, so
   * this is this process's tree minus the servers.
   */
  clientSeconds: number;
  /** Fraction of the whole machine's CPU time that was busy (any process, kernel threads too). */
  hostBusyFraction: number;
}

export async function startCpuWindow(serverPids: readonly number[]): Promise<CpuWindow> {
  const hz = await clockTicksPerSecond();
  const serverStart = treeTicks(serverPids);
  const selfStart = treeTicks([process.pid]);
  const hostStart = hostTicks();
  return {
    finish() {
      const serverTicks = treeTicks(serverPids) - serverStart;
      // fio has exited and been reaped by now: its time is in our cutime+cstime.
      const selfTicks = treeTicks([process.pid]) - selfStart;
      const hostEnd = hostTicks();
      const total = hostEnd.total - hostStart.total;
      return {
        serverSeconds: serverTicks / hz,
        clientSeconds: Math.max(0, selfTicks - serverTicks) / hz,
        hostBusyFraction: total > 0 ? (hostEnd.busy - hostStart.busy) / total : 0,
      };
    },
  };
}
