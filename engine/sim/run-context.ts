/**
 * What the parts of a simulation run share: the run's state as the call steps and the recovery
 * check see it, its statistics, and small helpers.
 */
import { isEngineError } from '../errors.ts';
import type { Pool } from '../pool.ts';
import type { SimDisk } from '../storage/sim-disk.ts';
import type { DamageTracker } from './damage.ts';
import type { ExportModel, Model } from './model.ts';

export interface ScenarioStats {
  steps: number;
  recoveries: number;
  powerCuts: number;
  processCrashes: number;
  tornWrites: number;
  injectedFaults: number;
  corruptions: number;
  bytesVerified: number;
  readOnlyEntered: number;
  recoveryRefusals: number;
  excusedReadFailures: number;
  failedCalls: number;
}

export function zeroStats(): ScenarioStats {
  return {
    steps: 0, recoveries: 0, powerCuts: 0, processCrashes: 0, tornWrites: 0, injectedFaults: 0,
    corruptions: 0, bytesVerified: 0, readOnlyEntered: 0, recoveryRefusals: 0, excusedReadFailures: 0, failedCalls: 0,
  };
}

export interface RunContext {
  readonly model: Model;
  readonly damage: DamageTracker;
  readonly disk: SimDisk;
  readonly stats: ScenarioStats;
  /** The running pool; throws when none is open. */
  readonly pool: Pool;
  /** The pool was seen read-only since it was opened: reads are checked loosely, writes must fail. */
  readonly readOnly: boolean;
  /** A crash point is armed: calls may fail in any way the engine reports. */
  readonly crashing: boolean;
  /** The pool has a capacity: client writes may get NO_SPACE. */
  readonly capacityLimited: boolean;
  say(line: string): void;
  /** Throws SimFailure when nothing injected explains why a call failed. */
  judgeFailure(what: string, err: unknown): void;
  /** A fresh export name with this prefix. */
  newName(prefix: string): string;
  /** Reads an export whole and checks it against the model. */
  checkLive(e: ExportModel, context: string): Promise<void>;
  /** Work that overlaps the following steps (a background clean); settled before restarts. */
  background(work: Promise<unknown>): void;
}

export function describeError(err: unknown): string {
  if (isEngineError(err)) return `${err.code} (${err.message})`;
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/** Lets the log writer and other background work run (they use setImmediate). */
export async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
