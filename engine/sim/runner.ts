/**
 * Runs one scenario against a real Pool on a SimDisk, keeping the model in step and checking
 * the engine's promises as it goes:
 *
 *   - after every recovery: each export holds, per block, its last flushed value or a later
 *     one; snapshots never change; exports are exactly those that must or may exist;
 *   - while nothing failed, reads return exactly the latest data;
 *   - a failed log write or fdatasync turns the pool read-only: later writes fail (IO_ERROR or
 *     READ_ONLY), reads keep working; nothing else turns it read-only;
 *   - injected damage is reported (read error or refused recovery), never returned as data.
 *
 * The first broken promise ends the scenario with a SimFailure; the result carries the step and
 * the step-by-step log.
 */
import { isEngineError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { Pool, type StoragePoolOptions } from '../pool.ts';
import type { ArmedFault, Firing } from '../storage/sim-disk-faults.ts';
import { describeRule } from '../storage/sim-disk-faults.ts';
import { SimDisk } from '../storage/sim-disk.ts';
import { BLOCK_BYTES, writeData } from './block-data.ts';
import { isCallStep, runCall } from './calls.ts';
import { describeValue, readExport, SimFailure, verifyBlocks } from './checker.ts';
import { DamageTracker, describe as describeDamage } from './damage.ts';
import { Model, type ExportModel, type RecoveryKind } from './model.ts';
import { checkRecovered } from './recovery-check.ts';
import { describeError, turns, zeroStats, type RunContext, type ScenarioStats } from './run-context.ts';
import { describeStep, type Scenario, type Step } from './scenario.ts';

export type { ScenarioStats } from './run-context.ts';

export interface ScenarioResult {
  seed: number;
  ok: boolean;
  failure?: { step: number; description: string; message: string };
  /** Why the scenario stopped early without failing (recovery refused damaged data). */
  endedEarly?: string;
  stats: ScenarioStats;
  log: string[];
}

export interface RunOptions {
  /** Called with each log line as it happens (the result carries them all anyway). */
  onLog?: (line: string) => void;
}

/** A step that does not settle in this long is hung; nothing here waits on a timer otherwise. */
const STEP_TIMEOUT_MS = 30_000;

const LOG_FILE = /^segment-\d+\.log$/;

function isLogWriteFiring(f: Firing): boolean {
  return LOG_FILE.test(f.name) && (f.op === 'pwrite' || f.op === 'fdatasync' || f.op === 'truncate');
}

/** Keeps what the pool logs about recovery and failures, for the step log. */
class RecordingLogger implements Logger {
  readonly lines: string[] = [];

  debug = (): void => {};
  info = (obj: object | string, msg?: string): void => {
    if (msg === 'pool recovered') this.lines.push(`pool recovered ${JSON.stringify(obj)}`);
  };
  warn = (obj: object | string, msg?: string): void => {
    this.lines.push(`engine warn: ${msg ?? ''} ${typeof obj === 'string' ? obj : JSON.stringify(obj)}`);
  };
  error = (obj: object | string, msg?: string): void => {
    this.lines.push(`engine error: ${msg ?? ''} ${typeof obj === 'string' ? obj : JSON.stringify(obj)}`);
  };
  child = (): Logger => this;
}

export async function runScenario(scenario: Scenario, options: RunOptions = {}): Promise<ScenarioResult> {
  return new SimulationRun(scenario, options).run();
}

class SimulationRun implements RunContext {
  readonly #scenario: Scenario;
  readonly #onLog: ((line: string) => void) | undefined;
  readonly #log: string[] = [];
  readonly #engineLog = new RecordingLogger();
  readonly #model = new Model();
  readonly #damage = new DamageTracker();
  readonly #stats: ScenarioStats = zeroStats();
  #disk: SimDisk;
  #pool: Pool | undefined;
  /** Every pool opened, so that all are closed (their timers stopped) whatever happens. */
  readonly #pools: Pool[] = [];
  #armed: ArmedFault[] = [];
  #background: Array<Promise<unknown>> = [];
  /** The pool was seen read-only since its recovery. */
  #readOnly = false;
  /** A crash point is armed: calls may fail in any way the engine reports. */
  #crashing = false;
  #stepIndex = -1;
  #names = 0;
  #endedEarly: string | undefined;
  /** A promise the engine left to reject with nobody listening (would crash the daemon). */
  #unhandled: unknown;

  constructor(scenario: Scenario, options: RunOptions) {
    this.#scenario = scenario;
    this.#onLog = options.onLog;
    this.#disk = new SimDisk(scenario.seed);
  }

  // --- RunContext: what the call steps and the recovery check see ----------------------------

  get model(): Model {
    return this.#model;
  }

  get damage(): DamageTracker {
    return this.#damage;
  }

  get disk(): SimDisk {
    return this.#disk;
  }

  get stats(): ScenarioStats {
    return this.#stats;
  }

  get pool(): Pool {
    return this.#livePool;
  }

  get readOnly(): boolean {
    return this.#readOnly;
  }

  get crashing(): boolean {
    return this.#crashing;
  }

  get capacityLimited(): boolean {
    return this.#scenario.pool.capacityBytes !== undefined;
  }

  say(line: string): void {
    this.#say(line);
  }

  judgeFailure(what: string, err: unknown): void {
    this.#judgeFailure(what, err);
  }

  newName(prefix: string): string {
    return `${prefix}${++this.#names}`;
  }

  checkLive(e: ExportModel, context: string): Promise<void> {
    return this.#checkLive(e, context);
  }

  background(work: Promise<unknown>): void {
    this.#background.push(work);
  }

  #say(line: string): void {
    const text = this.#stepIndex >= 0 ? `#${this.#stepIndex} ${line}` : line;
    this.#log.push(text);
    this.#onLog?.(text);
  }

  #flushEngineLog(): void {
    for (const line of this.#engineLog.lines.splice(0)) this.#say(`  ${line}`);
  }

  get #poolOptions(): StoragePoolOptions {
    const c = this.#scenario.pool;
    const opts: StoragePoolOptions = { logger: this.#engineLog, segmentBytes: c.segmentBytes, checkpointIntervalBytes: c.checkpointIntervalBytes, cacheBytes: c.cacheBytes };
    if (c.capacityBytes !== undefined) opts.capacityBytes = c.capacityBytes;
    return opts;
  }

  get #livePool(): Pool {
    if (!this.#pool) throw new Error('no pool is open');
    return this.#pool;
  }

  async run(): Promise<ScenarioResult> {
    let failure: ScenarioResult['failure'];
    const onUnhandled = (reason: unknown) => {
      this.#unhandled ??= reason;
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      await this.#setUp();
      const steps = this.#scenario.steps;
      for (this.#stepIndex = 0; this.#stepIndex < steps.length && !this.#endedEarly; this.#stepIndex++) {
        const step = steps[this.#stepIndex]!;
        this.#stats.steps++;
        this.#model.step = this.#stepIndex;
        await this.#withTimeout(this.#runStep(step), describeStep(step));
        this.#flushEngineLog();
        this.#checkUnhandled();
      }
      if (!this.#endedEarly) {
        this.#stepIndex = steps.length;
        await this.#withTimeout(this.#finish(), 'final check');
      }
      this.#checkUnhandled();
    } catch (err) {
      this.#flushEngineLog();
      const step = this.#stepIndex;
      const description = step >= 0 && step < this.#scenario.steps.length ? describeStep(this.#scenario.steps[step]!) : step < 0 ? 'setup' : 'final check';
      const message = err instanceof SimFailure ? err.message : `the simulation itself crashed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`;
      failure = { step, description, message };
      this.#say(`FAILED: ${message}`);
    } finally {
      const closing = async () => {
        for (const pool of this.#pools) await pool.close().catch(() => {});
        await Promise.allSettled(this.#background);
        await turns(1); // rejections left unhandled surface by now
      };
      await this.#withTimeout(closing(), 'closing the pools').catch((err: unknown) => {
        failure ??= { step: this.#stepIndex, description: 'cleanup', message: (err as Error).message };
      });
      process.off('unhandledRejection', onUnhandled);
      if (!failure && this.#unhandled !== undefined) {
        failure = { step: this.#stepIndex, description: 'cleanup', message: `unhandled promise rejection in the engine: ${describeError(this.#unhandled)}` };
      }
    }
    const c = this.#disk.counters;
    this.#stats.tornWrites = c.unsyncedTorn;
    this.#stats.injectedFaults = c.injectedIoErrors + c.injectedNoSpace;
    this.#stats.corruptions = c.corruptions;
    const result: ScenarioResult = { seed: this.#scenario.seed, ok: failure === undefined, stats: this.#stats, log: this.#log };
    if (failure) result.failure = failure;
    if (this.#endedEarly) result.endedEarly = this.#endedEarly;
    return result;
  }

  #checkUnhandled(): void {
    if (this.#unhandled !== undefined) {
      throw new SimFailure(`unhandled promise rejection in the engine (it would crash the daemon): ${describeError(this.#unhandled)}`);
    }
  }

  async #withTimeout(work: Promise<void>, what: string): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const hung = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SimFailure(`${what} did not settle within ${STEP_TIMEOUT_MS / 1000} s (hung)`)), STEP_TIMEOUT_MS);
    });
    try {
      await Promise.race([work, hung]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #setUp(): Promise<void> {
    this.#say(`scenario seed=${this.#scenario.seed} pool=${JSON.stringify(this.#scenario.pool)} volumes=${JSON.stringify(this.#scenario.volumes)} steps=${this.#scenario.steps.length}`);
    const pool = await Pool.openWithStorage(this.#disk, this.#poolOptions);
    this.#adopt(pool);
    for (const blocks of this.#scenario.volumes) {
      const name = this.newName('v');
      await pool.createVolume(name, blocks * BLOCK_BYTES);
      this.#model.create(name, blocks, { live: true, onDisk: 'yes' });
    }
    this.#flushEngineLog();
  }

  #adopt(pool: Pool): void {
    this.#pool = pool;
    this.#pools.push(pool);
    this.#readOnly = false;
  }

  // --- steps -----------------------------------------------------------------------------------

  async #runStep(step: Step): Promise<void> {
    switch (step.kind) {
      case 'restart':
        return this.#restart();
      case 'processCrash':
        return this.#processCrash();
      case 'powerCut':
        return this.#powerCut(step.tear);
      case 'crashDuring':
        return this.#crashDuring(step);
      case 'recoveryFault':
        return this.#recoveryFault(step.rule);
      case 'fault': {
        this.#armed.push(this.#disk.addFault(step.rule));
        this.#say(`arm fault: ${describeRule(step.rule)}`);
        return;
      }
      case 'corrupt': {
        const done = await this.#damage.inject(this.#disk, this.#stepIndex, step);
        if (typeof done === 'string') this.#say(`corrupt: skipped (${done})`);
        else this.#say(`corrupt: ${describeDamage(done)}${done.kind === 'data' ? `, which held ${describeValue(this.#model, done.corruption.original, { describe: () => undefined })}` : ''}`);
        return;
      }
      default:
        await runCall(this, step);
        await this.#observe();
    }
  }

  #firings(): Firing[] {
    return this.#armed.flatMap((a) => a.firings);
  }

  /**
   * Judges a failed call: with no injected fault, no crash, no capacity limit and a healthy
   * pool, the engine had no reason to fail.
   */
  #judgeFailure(what: string, err: unknown): void {
    this.#stats.failedCalls++;
    if (!isEngineError(err)) throw new SimFailure(`${what} threw a non-EngineError: ${describeError(err)}`, { cause: err });
    if (this.#crashing) return;
    const code = err.code;
    const explained =
      this.#firings().length > 0 ||
      this.#readOnly ||
      (code === 'NO_SPACE' && this.capacityLimited) ||
      ((code === 'CORRUPTION' || code === 'IO_ERROR') && this.#damage.outstanding(this.#disk).length > 0);
    if (!explained) throw new SimFailure(`${what} failed with nothing injected to explain it: ${describeError(err)}`, { cause: err });
  }

  // --- observation -----------------------------------------------------------------------------

  /**
   * After each call: lets background work run, then checks the fsync failure policy — a failed
   * log write or sync turns the pool read-only, and nothing else does.
   */
  async #observe(): Promise<void> {
    if (!this.#pool) return;
    await turns(3);
    const readOnly = this.#livePool.stats().readOnly;
    const firings = this.#firings();
    const logFiring = firings.find(isLogWriteFiring);
    if (logFiring && !readOnly) {
      throw new SimFailure(`fsync failure policy: an injected ${logFiring.code} on ${logFiring.op} of ${logFiring.name} did not turn the pool read-only`);
    }
    if (readOnly && firings.length === 0) throw new SimFailure('the pool turned read-only with no injected fault');
    if (readOnly && !this.#readOnly) {
      this.#readOnly = true;
      this.#stats.readOnlyEntered++;
      this.#say(`pool is read-only now (after ${firings.map((f) => `${f.code} on ${f.op} ${f.name}`).join(', ')}); checking reads and a probe write`);
      await this.#checkReadOnly();
    }
  }

  /** On a read-only pool reads keep working and a write fails with IO_ERROR or READ_ONLY. */
  async #checkReadOnly(): Promise<void> {
    for (const name of this.#model.liveNames()) await this.#checkLive(this.#model.get(name), 'read on the read-only pool');
    const volumes = this.#model.liveNames('volume');
    if (volumes.length === 0) return;
    const e = this.#model.get(volumes[0]!);
    const dev = this.#livePool.openExport(e.name);
    const probe = writeData(0xdead, BLOCK_BYTES);
    try {
      await dev.write(0, probe, false);
    } catch (err) {
      const full = isEngineError(err) && err.code === 'NO_SPACE' && this.capacityLimited;
      if (isEngineError(err) && (err.code === 'IO_ERROR' || err.code === 'READ_ONLY' || full)) {
        this.#say(`  probe write → ${err.code}, as it should`);
        return;
      }
      throw new SimFailure(`a probe write on the read-only pool failed with ${describeError(err)}, not IO_ERROR or READ_ONLY`);
    } finally {
      dev.close();
    }
    throw new SimFailure(`a probe write to ${e.name} was accepted by the read-only pool`);
  }

  async #checkLive(e: ExportModel, context: string): Promise<void> {
    let rb;
    try {
      rb = await readExport(this.#livePool, e, this.#damage.readExcuse(this.#disk), context);
    } catch (err) {
      // Power failed in the middle of the read: the machine is gone, recovery is checked next.
      if (this.#disk.crashed) return;
      throw err;
    }
    if (rb.blocks.length !== e.blocks.length) throw new SimFailure(`${context}: ${e.name} has ${rb.blocks.length} blocks, the model ${e.blocks.length}`);
    verifyBlocks(this.#model, e, rb, { exact: !this.#readOnly, context: `${context} at step ${this.#stepIndex}`, damage: this.#damage });
    this.#stats.bytesVerified += rb.bytesRead;
    this.#stats.excusedReadFailures += rb.excusedFailures;
  }

  // --- restarts and crashes --------------------------------------------------------------------

  async #settleBackground(): Promise<void> {
    await Promise.allSettled(this.#background.splice(0));
  }

  #disarm(): void {
    this.#disk.clearFaults();
    this.#armed = [];
  }

  async #restart(): Promise<void> {
    const pool = this.#livePool;
    await pool.close();
    await this.#settleBackground();
    // close() flushes and checkpoints unless the pool is read-only (or turned so while closing).
    const flushed = !pool.stats().readOnly;
    this.#say(`restart (clean shutdown${flushed ? '' : ' of a read-only pool: nothing more flushed'})`);
    this.#disarm();
    if (flushed) this.#model.flushAll();
    await this.#recover(flushed ? 'medium' : 'pageCache', flushed, 'after a clean restart');
  }

  async #processCrash(): Promise<void> {
    this.#say('process crash (kill -9) and restart: the page cache survives');
    this.#stats.processCrashes++;
    const next = this.#disk.processRestart();
    await this.#abandon();
    this.#disk = next;
    this.#disarm();
    await this.#recover('pageCache', false, 'after a process crash');
  }

  async #powerCut(tear: boolean): Promise<void> {
    this.#stats.powerCuts++;
    const tornBefore = this.#disk.counters.unsyncedTorn;
    const next = this.#disk.powerCut({ tear });
    await this.#abandon();
    this.#disk = next;
    this.#disarm();
    const c = next.counters;
    this.#say(`power cut${tear ? ` (tearing: ${c.unsyncedTorn - tornBefore} write(s) torn)` : ''}`);
    await this.#recover('medium', false, 'after a power cut');
  }

  /** The running engine is gone with its disk view: stop it and its background work. */
  async #abandon(): Promise<void> {
    const pool = this.#pool;
    this.#pool = undefined;
    await pool?.close().catch(() => {});
    await this.#settleBackground();
  }

  async #crashDuring(step: Extract<Step, { kind: 'crashDuring' }>): Promise<void> {
    this.#say(`power will fail after ${step.afterOps} disk operation(s), during: ${describeStep(step.step)}`);
    this.#disk.crashAfter(step.afterOps);
    this.#crashing = true;
    try {
      if (step.step.kind === 'restart') await this.#livePool.close(); // a crash during a clean shutdown
      else if (isCallStep(step.step)) await runCall(this, step.step);
      await turns(3);
    } finally {
      this.#crashing = false;
    }
    await this.#powerCut(step.tear);
  }

  async #recoveryFault(rule: Extract<Step, { kind: 'recoveryFault' }>['rule']): Promise<void> {
    const pool = this.#livePool;
    await pool.close();
    await this.#settleBackground();
    const flushed = !pool.stats().readOnly;
    this.#disarm();
    if (flushed) this.#model.flushAll();
    const armed = this.#disk.addFault(rule);
    this.#say(`restart with a fault during recovery: ${describeRule(rule)}`);
    try {
      const reopened = await Pool.openWithStorage(this.#disk, this.#poolOptions);
      this.#pools.push(reopened);
      await reopened.close();
      // A failed checkpoint write is retried later by design; the log and pool.json are not.
      const swallowed = armed.firings.find((f) => !f.name.startsWith('index.ckpt'));
      if (swallowed) throw new SimFailure(`recovery succeeded although an injected ${swallowed.code} hit ${swallowed.op} of ${swallowed.name}`);
      this.#say('  recovery did not reach the fault');
    } catch (err) {
      if (err instanceof SimFailure) throw err;
      if (!isEngineError(err)) throw new SimFailure(`recovery with an injected fault threw a non-EngineError: ${describeError(err)}`, { cause: err });
      this.#say(`  recovery failed as it should: ${describeError(err)}`);
    }
    this.#flushEngineLog();
    this.#disarm();
    await this.#recover(flushed ? 'medium' : 'pageCache', flushed, 'after a recovery that hit a fault');
  }

  /**
   * Opens the pool on the current disk and checks it against the model: the exports that must
   * exist do, no others; every block holds an allowed value (exactly the current one when
   * `exact`). Damage may make recovery refuse the pool: that ends the scenario, as a pass.
   */
  async #recover(how: RecoveryKind, exact: boolean, context: string): Promise<void> {
    if (this.#onLog) for (const line of this.#disk.describeFiles()) this.#say(`  disk: ${line}`);
    let pool: Pool;
    try {
      pool = await Pool.openWithStorage(this.#disk, this.#poolOptions);
    } catch (err) {
      this.#flushEngineLog();
      const excuse = isEngineError(err) && (err.code === 'CORRUPTION' || err.code === 'IO_ERROR') ? this.#damage.refusalExcuse(this.#disk, this.#model) : undefined;
      if (excuse) {
        this.#stats.recoveryRefusals++;
        this.#endedEarly = `recovery refused the pool (${describeError(err)}) after damage to ${excuse}`;
        this.#say(this.#endedEarly);
        return;
      }
      throw new SimFailure(`${context}: the pool did not open: ${describeError(err)}; damage on the medium: ${this.#damage.summary(this.#disk, this.#model)}`, { cause: err });
    }
    this.#adopt(pool);
    this.#stats.recoveries++;
    this.#flushEngineLog();
    const checked = await checkRecovered(this, pool, how, exact, context);
    this.#say(`  recovered: ${checked} export(s) checked${exact ? ' exactly' : ''}`);
  }

  async #finish(): Promise<void> {
    if (!this.#pool) return;
    await turns(3);
    await this.#observe();
    for (const name of this.#model.liveNames()) await this.#checkLive(this.#model.get(name), 'final read');
    this.#say('final clean restart');
    await this.#restart();
    this.#flushEngineLog();
    await this.#pool?.close();
  }
}
