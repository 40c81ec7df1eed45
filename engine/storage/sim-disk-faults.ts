/**
 * Fault rules of the simulated disk: which operations fail, and with what. A rule matches by
 * operation kind and file name; among the matching operations it fires on the nth, or on each
 * with a probability drawn from the disk's seeded generator, at most `times` times.
 */
import { EngineError } from '../errors.ts';
import type { DiskOp } from './memory-storage.ts';
import type { SimRandom } from './sim-disk-prng.ts';

export type InjectedCode = 'IO_ERROR' | 'NO_SPACE';

export interface FaultRule {
  ops: readonly DiskOp[];
  /** Files the rule applies to (tested against the bare file name); every file when absent. */
  name?: RegExp;
  /** Fires from the nth matching operation on (1 = the next one). Default 1. */
  nth?: number;
  /** Fires on each eligible operation with this probability (seeded). Default 1. */
  probability?: number;
  /** Fires at most this many times. Default 1 without a probability, unlimited with one. */
  times?: number;
  code: InjectedCode;
  /**
   * For a failed fdatasync: the file's unsynced writes stop being dirty, as Linux does after a
   * writeback error: reads still see them, no later datasync persists them, a power cut loses them.
   */
  dropsDirtyData?: boolean;
}

export interface Firing {
  op: DiskOp;
  name: string;
  code: InjectedCode;
}

/** A rule in force, with what it has seen and done. */
export class ArmedFault {
  readonly rule: FaultRule;
  /** Matching operations seen so far. */
  seen = 0;
  readonly firings: Firing[] = [];

  constructor(rule: FaultRule) {
    if (rule.ops.length === 0) throw new RangeError('a fault rule needs at least one operation kind');
    if (rule.nth !== undefined && (!Number.isInteger(rule.nth) || rule.nth < 1)) throw new RangeError(`nth must be a positive integer, got ${rule.nth}`);
    if (rule.probability !== undefined && !(rule.probability >= 0 && rule.probability <= 1)) {
      throw new RangeError(`probability must be in [0, 1], got ${rule.probability}`);
    }
    this.rule = rule;
  }

  get fired(): number {
    return this.firings.length;
  }

  get exhausted(): boolean {
    return this.fired >= (this.rule.times ?? (this.rule.probability === undefined ? 1 : Infinity));
  }

  matches(op: DiskOp, name: string): boolean {
    return this.rule.ops.includes(op) && (this.rule.name === undefined || this.rule.name.test(name));
  }

  /** Called for every operation the rule matches; returns the error when it fires. */
  decide(op: DiskOp, name: string, random: SimRandom): EngineError | undefined {
    this.seen++;
    if (this.exhausted || this.seen < (this.rule.nth ?? 1)) return undefined;
    // Draw only for probabilistic rules, so that adding an nth rule shifts no other choice.
    if (this.rule.probability !== undefined && !random.chance(this.rule.probability)) return undefined;
    this.firings.push({ op, name, code: this.rule.code });
    const what = this.rule.code === 'NO_SPACE' ? 'no space left on device (injected ENOSPC)' : 'input/output error (injected EIO)';
    return new EngineError(this.rule.code, `${op} ${name}: ${what}`);
  }
}

export function describeRule(rule: FaultRule): string {
  const parts = [`${rule.code} on ${rule.ops.join('/')}`];
  if (rule.name) parts.push(`of ${rule.name.source}`);
  if (rule.nth !== undefined) parts.push(`from match #${rule.nth}`);
  if (rule.probability !== undefined) parts.push(`with p=${rule.probability}`);
  if (rule.times !== undefined) parts.push(`at most ${rule.times}x`);
  if (rule.dropsDirtyData) parts.push('(dirty data dropped)');
  return parts.join(' ');
}
