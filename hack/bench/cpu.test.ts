import { describe, expect, it } from 'vitest';
import { parseHostStat, parseProcStat, treeTicks } from './cpu.ts';

describe('parseProcStat', () => {
  it('reads ppid, utime+stime and cutime+cstime', () => {
    const line = '7199 (head) R 7194 7194 3735 0 -1 4194304 103 0 0 0 11 7 5 3 20 0 1 0 71027 2998272 416';
    expect(parseProcStat(line)).toEqual({ pid: 7199, ppid: 7194, ownTicks: 18, reapedChildTicks: 8 });
  });

  it('counts fields from the last parenthesis, whatever the command name holds', () => {
    const line = '42 (a) b (c)) S 1 42 42 0 -1 0 0 0 0 0 100 50 0 0 20 0 4 0 1 1 1';
    expect(parseProcStat(line)).toMatchObject({ pid: 42, ppid: 1, ownTicks: 150 });
  });
});

describe('parseHostStat', () => {
  it('splits busy from idle and iowait', () => {
    expect(parseHostStat('cpu  10051 0 5885 122423 2506 0 309 301 0 0\ncpu0 1 2 3 4\n')).toEqual({
      busy: 10051 + 5885 + 309 + 301,
      total: 10051 + 5885 + 309 + 301 + 122423 + 2506,
    });
  });
});

describe('treeTicks', () => {
  it('counts this process and ignores PIDs that do not exist', () => {
    expect(treeTicks([process.pid])).toBeGreaterThanOrEqual(0);
    expect(treeTicks([2 ** 30])).toBe(0);
  });
});
